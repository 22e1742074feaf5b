"""A config file read again after an edit, parsing and validating only what changed (issue
14: a live reload that adds 1,000 servers to a pool of 10,000 parsed all 11,000 again, ~0.45 s
of CPU on cores the server and its clients need).

Theory of operation
-------------------
A big pool's servers are a block list of mappings, one a line (flow) or a few lines each
(block)::

    servers:
      - {name: s1, address: 10.0.0.1:80}
      - name: s2
        address: 10.0.0.2:80

:class:`ParseCache` cuts every such list (``key:`` alone on its line, then at least
MIN_ITEMS items at one indentation, blank and comment lines between them) out of the text:
the ``key:`` line gets a token of its own as its value (``key: qz...``), the item lines are
blanked. YAML parses that skeleton (small); each item (its text from the ``- ``, dedented) is
parsed only if it was not in the last file (all new ones in one parse), the others are the
last file's parsed values; the tokens are then replaced by the lists. Servers validated
before (:class:`~quiesce.config.models.ServerConfig`) are given to pydantic as the models they
became (a model instance passes as it is), so only new or changed servers are validated.

Why the result is the full parse's: an item is a ``- {...}`` line, or a ``- `` line and the
lines after it indented deeper, up to a blank or comment line (a block item); none of its
lines has an anchor, alias, tag or comment (``&``, ``*``, ``!``, ``#``: a reused item's
alias would keep the old anchor's value), nor a block item a block scalar (``|``, ``>``: it
keeps the blank lines after it, which are not in the item). The new items are parsed in one
list where each must come back as one mapping (a quote or bracket running on into the next
item would merge two), so each is whole and means the same wherever it stands, dedented
(YAML's meaning inside an item depends on relative indentation only). The token is in the
text once, after ``key: ``: the skeleton's node of that value is the cut list's place, unless
the line was inside a scalar (the value is then not the token alone: not found) or a flow
collection (refused); any alias in the skeleton is refused too (a recursive one would be
walked forever). A line the cut does not take ends the list there, and what follows is left
in the skeleton for YAML to judge (a deeper line after it makes the token a longer scalar:
not found). A file with a tab, a carriage return, a byte-order mark or another of YAML's or
Python's odd line breaks is not cut at all. Whenever anything is not so (or the file has any
problem: YAML, validation, cross-references, the files it names), :func:`load_text` parses
the whole file as ``quiesce check`` does (:func:`quiesce.config.loader.load_text`): errors
carry the same messages and line numbers. tests/config/test_reparse.py compares the two on
generated, edited and mangled files.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from quiesce.config.loader import (
    _UniqueKeyLoader,
    cross_reference_errors,
    read_config_file,
    semantic_problems,
)
from quiesce.config.loader import load_text as full_load_text
from quiesce.config.models import Config, ServerConfig

MIN_ITEMS = 32
"""Item lines a list needs to be cut out of the text (a short one costs YAML little)."""

_KEY = re.compile(r"( *)([A-Za-z_][A-Za-z0-9_-]*): *")
_ITEM = re.compile(r"( *)- (\{[^&*!#]*\}) *")
# a block item's first line and the lines after it (deeper): no block scalar (it keeps the
# blank lines after it, which end an item here), comment, anchor, alias or tag on any of them
_START = re.compile(r"( *)- ([^\s{\[&*!#|>%@`-][^&*!#|>]*)")
_MORE = re.compile(r"( +)([^\s&*!#|>][^&*!#|>]*)")
_SKIP = re.compile(r" *(#.*)?")
# YAML's line breaks (\r, \x85, \u2028, \u2029) and str.splitlines's others: lines are cut at
# \n only, so a file with any of them (or a tab, or a byte-order mark) is parsed whole
_ODD = re.compile("[\t\r\x0b\x0c\x1c-\x1e\x85\u2028\u2029\ufeff]")


class _Entry:
    """An item line's parsed value and, once a file holding it was valid, the server model
    pydantic made of it."""

    __slots__ = ("raw", "server")

    def __init__(self, raw: dict[Any, Any]) -> None:
        self.raw = raw
        self.server: ServerConfig | None = None


class Parsed:
    """The text's parse (``raw``, equal to YAML's parse of the whole text) and each list cut
    out of it with its item lines (``lists``: by the list's id)."""

    __slots__ = ("lists", "raw")

    def __init__(self, raw: Any, lists: dict[int, list[_Entry]]) -> None:
        self.raw = raw
        self.lists = lists


class ParseCache:
    """The last file's item lines, parsed (and validated), for the next parse of a file
    (:func:`load_text`). ``stats``: item lines reused and parsed by the last parse, and
    whether it was cut at all (the reload bench and tests read it)."""

    def __init__(self) -> None:
        self.items: dict[str, _Entry] = {}
        self.stats: dict[str, int] = {"reused": 0, "parsed": 0, "cut": 0}

    def parse(self, text: str) -> Parsed | None:
        """The text parsed, reusing the last file's item lines; None when it cannot be cut
        with certainty or does not parse (the caller parses it whole)."""
        self.stats = {"reused": 0, "parsed": 0, "cut": 0}
        if _ODD.search(text):
            return None
        lines = text.split("\n")
        blocks = _blocks(lines)
        if not blocks:
            return None
        tokens: dict[str, list[str]] = {}
        for line, indent, key, bodies in blocks:
            token = "qz" + secrets.token_hex(12)
            if token in text:  # not in 2**96: but then certainly not
                return None
            lines[line] = f"{indent}{key}: {token}"
            tokens[token] = bodies
        try:
            data = _parse_skeleton("\n".join(lines), tokens)
        except yaml.YAMLError:
            return None
        if data is None:
            return None
        entries = self._entries(tokens)
        if entries is None:
            return None
        lists: dict[int, list[_Entry]] = {}
        values: dict[str, list[Any]] = {}
        for token, bodies in tokens.items():
            chosen = [entries[b] for b in bodies]
            values[token] = value = [e.raw for e in chosen]
            lists[id(value)] = chosen
        if _substitute(data, values) != len(values):
            return None
        self.stats["cut"] = len(values)
        return Parsed(data, lists)

    def _entries(self, tokens: dict[str, list[str]]) -> dict[str, _Entry] | None:
        """Every item line's entry: the last file's, or parsed now (all at once). The cache
        keeps this file's lines only."""
        entries: dict[str, _Entry] = {}
        new: dict[str, None] = {}  # in the file's order, once each
        for bodies in tokens.values():
            for body in bodies:
                old = self.items.get(body)
                if old is not None:
                    entries[body] = old
                else:
                    new[body] = None
        if new:
            try:
                text = "\n".join(new)
                values = yaml.load(text, Loader=_UniqueKeyLoader)
            except yaml.YAMLError:
                return None
            if not isinstance(values, list) or len(values) != len(new):
                return None  # a line ran on into the next
            for body, value in zip(new, values, strict=True):
                if not isinstance(value, dict):
                    return None
                entries[body] = _Entry(value)
        self.stats["reused"] = len(entries) - len(new)  # distinct lines
        self.stats["parsed"] = len(new)
        self.items = entries
        return entries

    def validate(self, parsed: Parsed) -> Config:
        """``Config.model_validate`` of the parse, each pool's servers cut out of the text
        given as the models they were validated into before (a model passes pydantic as it
        is); raises ValidationError. The new servers' models are remembered."""
        raw = parsed.raw
        cut: list[tuple[str, list[_Entry]]] = []
        given = raw
        pools = raw.get("pools") if isinstance(raw, dict) else None
        if isinstance(pools, dict):
            mine: dict[Any, Any] = {}
            for name, pool in pools.items():
                entries = None
                if isinstance(pool, dict) and isinstance(pool.get("servers"), list):
                    entries = parsed.lists.get(id(pool["servers"]))
                if entries is None:
                    mine[name] = pool
                    continue
                servers = [e.server if e.server is not None else e.raw for e in entries]
                mine[name] = {**pool, "servers": servers}
                cut.append((name, entries))
            given = {**raw, "pools": mine}
        config = Config.model_validate(given)
        for name, entries in cut:
            for entry, server in zip(entries, config.pools[name].servers, strict=True):
                entry.server = server
        return config


def _blocks(lines: list[str]) -> list[tuple[int, str, str, list[str]]]:
    """The lists to cut: (the ``key:`` line's index, its indentation, the key, each item's
    text from its ``- ``, dedented), their item lines blanked in ``lines``. An item is a flow
    mapping on its line or a block one: a ``- `` line and the lines indented deeper after it
    (a blank or comment line ends it)."""
    out: list[tuple[int, str, str, list[str]]] = []
    i, n = 0, len(lines)
    while i < n - 1:
        key = _KEY.fullmatch(lines[i])
        first = (_ITEM.fullmatch(lines[i + 1]) or _START.fullmatch(lines[i + 1])) if key else None
        if key is None or first is None or len(first.group(1)) < len(key.group(1)):
            i += 1
            continue
        indent = first.group(1)
        items: list[str] = []
        block: list[str] = []  # the block item being read
        last, j = i, i + 1
        while j < n:
            line = lines[j]
            if (flow := _ITEM.fullmatch(line)) is not None and flow.group(1) == indent:
                items += ["\n".join(block)] if block else []
                items.append("- " + flow.group(2))
                block = []
            elif (start := _START.fullmatch(line)) is not None and start.group(1) == indent:
                items += ["\n".join(block)] if block else []
                block = [line[len(indent) :]]
            elif (
                block
                and (more := _MORE.fullmatch(line)) is not None
                and len(more.group(1)) > len(indent)
            ):
                block.append(line[len(indent) :])
            elif _SKIP.fullmatch(line) is not None:
                items += ["\n".join(block)] if block else []
                block = []
                j += 1
                continue
            else:
                break
            last = j
            j += 1
        items += ["\n".join(block)] if block else []
        if len(items) >= MIN_ITEMS:
            for k in range(i + 1, last + 1):
                lines[k] = ""
            out.append((i, key.group(1), key.group(2), items))
        i = last + 1
    return out


def _parse_skeleton(text: str, tokens: Mapping[str, list[str]]) -> Any:
    """YAML's parse of the skeleton (the SafeLoader refusing duplicate keys, as
    quiesce.config.loader), or None when a token is not where it was put: once each, the
    value of a block mapping, no node reached twice (an alias)."""
    loader = _UniqueKeyLoader(text)
    try:
        node = loader.get_single_node()
        if node is None or not _tokens_in_place(node, tokens):
            return None
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _tokens_in_place(root: yaml.Node, tokens: Mapping[str, list[str]]) -> bool:
    seen: set[int] = set()
    found = 0
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            return False  # an alias (the same list in two places; a loop of them)
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(value, yaml.ScalarNode) and value.value in tokens:
                    # (so it is plain, on its line: the token is nowhere else in the text)
                    if node.flow_style:
                        return False  # the cut line was inside a flow collection
                    found += 1
                    stack.append(key)
                else:
                    stack += (key, value)
        elif isinstance(node, yaml.SequenceNode):
            stack += node.value
    return found == len(tokens)


def _substitute(data: Any, values: Mapping[str, list[Any]]) -> int:
    """Each mapping value that is a token replaced by its list; how many were."""
    done = 0
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, value in item.items():
                if isinstance(value, str) and value in values:
                    item[key] = values[value]
                    done += 1
                elif isinstance(value, dict | list):
                    stack.append(value)
        elif isinstance(item, list):
            stack += [v for v in item if isinstance(v, dict | list)]
    return done


def load_text(
    text: str, cache: ParseCache, source: str = "config", base_dir: Path | None = None
) -> Config:
    """:func:`quiesce.config.loader.load_text`'s config, parsing and validating only what
    changed since the cache's last file when the text can be cut with certainty (see the
    module's doc); the whole file otherwise, and whenever it has a problem (the problems
    and their line numbers are the full parse's). Raises ConfigError."""
    parsed = cache.parse(text)
    if parsed is not None and isinstance(parsed.raw, dict) and parsed.raw:
        try:
            config = cache.validate(parsed)
        except ValidationError:
            pass
        else:
            if not cross_reference_errors(parsed.raw) and not semantic_problems(config, base_dir):
                return config
    return full_load_text(text, source, base_dir)


def load_config(path: str | Path, cache: ParseCache) -> Config:
    """:func:`quiesce.config.loader.load_config` with :func:`load_text`."""
    p = Path(path)
    return load_text(read_config_file(p), cache, str(p), p.resolve().parent)


__all__ = ["MIN_ITEMS", "ParseCache", "Parsed", "load_config", "load_text"]
