"""quiesce.config.reparse: a file read again parses and validates only its changed server
lines, and its result is always the full parse's: the same config, or the same problems
with the same line numbers (the full parse reports them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quiesce.config.loader import ConfigError, _UniqueKeyLoader
from quiesce.config.loader import load_text as full_load
from quiesce.config.reparse import MIN_ITEMS, ParseCache, load_config, load_text

HEAD = """admin:
  listen: 127.0.0.1:0
  users: [{name: admin, password_hash: "x", role: admin}]
pools:
"""
TAIL = """services:
  www: {listen: 127.0.0.1:0, pool: web}
"""


def server(i: int, port: int = 80, extra: str = "") -> str:
    return f"{{name: s{i}, address: 10.0.{i // 250}.{i % 250 + 1}:{port}{extra}}}"


def text(servers: list[str], *, pool: str = "web", indent: str = "      ") -> str:
    lines = "\n".join(f"{indent}- " + s.replace("\n", "\n" + indent) for s in servers)
    return f"{HEAD}  {pool}:\n    max_idle_per_server: 1\n    servers:\n{lines}\n{TAIL}"


def outcome(fn: Any, *args: Any) -> Any:
    """The config, or the problems of the ConfigError raised."""
    try:
        return fn(*args)
    except ConfigError as exc:
        return exc.problems


def test_an_edit_parses_and_validates_only_the_changed_lines() -> None:
    cache = ParseCache()
    first = [server(i) for i in range(200)]
    assert load_text(text(first), cache) == full_load(text(first))
    assert cache.stats == {"reused": 0, "parsed": 200, "cut": 1}
    second = [*first[:50], server(50, 81), *first[51:], server(200), server(201)]
    config = load_text(text(second), cache)
    assert config == full_load(text(second))
    assert cache.stats == {"reused": 199, "parsed": 3, "cut": 1}
    # the unchanged servers are the models validated last time, not validated again
    again = load_text(text([*second, server(202)]), cache)
    assert again.pools["web"].servers[0] is config.pools["web"].servers[0]
    assert again.pools["web"].servers[50] is config.pools["web"].servers[50]
    assert again.pools["web"].servers[50].port == 81
    assert again == full_load(text([*second, server(202)]))


def test_block_style_servers_are_cut_too() -> None:
    cache = ParseCache()
    first = [block(i, extra="\n  weight: 3\n  backup: true") for i in range(100)]
    second = [*first[:10], block(10, 81), *first[11:]]
    for doc in (text(first), text(second)):
        assert load_text(doc, cache) == full_load(doc)
    assert cache.stats == {"reused": 99, "parsed": 1, "cut": 1}


def test_a_bad_server_line_gets_the_full_parse_s_problem_and_line() -> None:
    cache = ParseCache()
    good = [server(i) for i in range(100)]
    load_text(text(good), cache)
    for bad, want in [
        (server(7, extra=", weight: 2, weight: 3"), "line 15, column"),  # duplicate key
        (server(7, port=70000), "servers[7].address"),
        (server(8), "duplicate server name"),
        ("{name: s7, address: 'x:80}", "line"),  # an unterminated quote
    ]:
        edited = [*good[:7], bad, *good[8:]]
        with pytest.raises(ConfigError) as exc:
            load_text(text(edited), cache)
        assert exc.value.problems == outcome(full_load, text(edited))
        assert any(want in p for p in exc.value.problems), exc.value.problems
    assert load_text(text(good), cache) == full_load(text(good))


@pytest.mark.parametrize(
    "doc",
    [
        # a 'servers:' line inside a block scalar: the list is text, not a list
        "note: |\n  servers:\n" + "".join(f"    - {server(i)}\n" for i in range(40)),
        # inside a flow mapping that spans lines (an error either way)
        "x: {\n  servers:\n" + "".join(f"    - {server(i)}\n" for i in range(40)) + "}\n",
        # a quote left open on the line before the list (a multi-line string)
        "x: 'a\n  servers:\n" + "".join(f"    - {server(i)}\n" for i in range(40)) + "  b'\n",
        # an anchor in the skeleton, its alias beside the list
        "a: &x {k: v}\nb:\n  servers:\n"
        + "".join(f"    - {server(i)}\n" for i in range(40))
        + "  c: *x\n",
        # the list as an alias's target, referenced twice
        "a: &p\n  servers:\n" + "".join(f"    - {server(i)}\n" for i in range(40)) + "b: *p\n",
        # a compact list (items at the key's indentation), then a comment and a blank line
        "servers:\n" + "".join(f"- {server(i)}\n# c\n\n" for i in range(40)) + "z: 1\n",
        # an item deeper than the others ends the list: the rest is YAML's to judge
        "servers:\n" + "".join(f"  - {server(i)}\n" for i in range(40)) + "    - {name: q}\nz: 1\n",
        # a merge key holding the list
        "base:\n  <<:\n    servers:\n" + "".join(f"      - {server(i)}\n" for i in range(40)),
        # two documents
        "servers:\n" + "".join(f"  - {server(i)}\n" for i in range(40)) + "---\nz: 1\n",
        # block items: a block scalar keeping the blank line after it
        "servers:\n"
        + "".join(f"  - name: s{i}\n    note: |+\n      x\n\n" for i in range(40))
        + "z: 1\n",
        # a plain scalar going on after a blank line (YAML folds it to "a\nb")
        "servers:\n" + "".join(f"  - name: s{i}\n    note: a\n\n      b\n" for i in range(40)),
        # quoted scalars on two lines, and across a blank line
        "servers:\n"
        + "".join(
            f"  - name: s{i}\n    note: 'a\n     b'\n    x: \"c\\\n      d\"\n" for i in range(40)
        ),
        "servers:\n" + "".join(f"  - name: s{i}\n    note: 'a\n\n     b'\n" for i in range(40)),
        # a tab
        "servers:\n" + "".join(f"  - {server(i)}\n" for i in range(40)) + "z:\t1\n",
    ],
)
def test_a_cut_is_the_full_parse_or_not_made(doc: str) -> None:
    assert_same_parse(ParseCache(), doc)


def assert_same_parse(cache: ParseCache, doc: str) -> None:
    try:
        want: Any = yaml.load(doc, Loader=_UniqueKeyLoader)
    except yaml.YAMLError:
        want = "error"
    parsed = cache.parse(doc)
    if parsed is not None:
        assert want != "error", doc
        assert parsed.raw == want, doc


def block(i: int, port: int = 80, extra: str = "") -> str:
    """A server as a block mapping (its lines after the first indented by 2)."""
    return f"name: s{i}\n  address: 10.0.{i // 250}.{i % 250 + 1}:{port}{extra}"


LINE = st.one_of(
    st.builds(server, st.integers(0, 60)),
    st.builds(block, st.integers(0, 60)),
    st.builds(
        block,
        st.integers(0, 60),
        st.sampled_from([80, 70000]),
        st.sampled_from(
            [
                "\n  weight: 2",
                "\n  healthmonitors:\n    - m1\n    - m2",
                "\n  healthmonitors: [m1,\n    m2]",
                "\n  weight: 2\n  weight: 3",  # a duplicate key
                "\n\n  weight: 2",  # a blank line inside
                "\n  # c\n  weight: 2",
                "\n  backup: |\n    x",
                "\n  backup: 'x\n  y'",
                "\n   b",  # a plain scalar on two lines
                "\n\n    b",  # ... after a blank line
                "\n weight: 2",  # less indented than the mapping
                "\nweight: 2",  # at the item's own indentation
                "\n  healthmonitors:\n  - m1",
            ]
        ),
    ),
    st.builds(server, st.integers(0, 60), st.sampled_from([80, 8080, 70000])),
    st.sampled_from(
        [
            "{name: x, address: 'a:1}",  # an unterminated quote
            "{name: x, address: a:1, name: y}",  # a duplicate key
            "{name: x, address: 'a:1', weight: 2}",
            "{name: 'x', address: \"a:1\", healthmonitors: [m1, m2]}",
            "{name: x, address: a:1, backup: yes}",
            "{name: x\n      address: a:1}",
            "{name: [x, {a: b}], address: a:1}",
            "{name: '}', address: a:1}",
            "{}",
        ]
    ),
)
JUNK = st.sampled_from(["{", "}", "'", '"', "\n", " ", "-", ":", "#", "&a", "*a", "|", "\n  ", "x"])


@st.composite
def files(draw: st.DrawFn) -> list[str]:
    """A few versions of a file: a list of server lines, edited, sometimes with junk
    inserted anywhere in the text."""
    lines = draw(st.lists(LINE, min_size=MIN_ITEMS - 2, max_size=MIN_ITEMS + 10))
    indent = draw(st.sampled_from(["      ", "    ", "        "]))
    out = []
    for _ in range(draw(st.integers(1, 4))):
        edits = draw(st.lists(st.tuples(st.integers(0, len(lines)), LINE), max_size=5))
        for at, line in edits:
            if draw(st.booleans()):
                lines.insert(at, line)
            elif at < len(lines):
                lines[at] = line
        doc = text(lines, indent=indent)
        for _ in range(draw(st.integers(0, 2))):
            at = draw(st.integers(0, len(doc)))
            doc = doc[:at] + draw(JUNK) + doc[at:]
        out.append(doc)
    return out


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(files())
def test_edited_files_load_as_the_full_parse_loads_them(versions: list[str]) -> None:
    cache, checked = ParseCache(), ParseCache()
    for doc in versions:
        assert_same_parse(checked, doc)
        assert outcome(load_text, doc, cache) == outcome(full_load, doc)


def test_load_config_reads_the_file(tmp_path: Path) -> None:
    path = tmp_path / "q.yaml"
    path.write_text(text([server(i) for i in range(40)]))
    cache = ParseCache()
    assert load_config(path, cache) == full_load(path.read_text(), str(path), tmp_path)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.yaml", cache)


def test_a_server_name_that_is_a_list_is_a_problem_not_a_crash() -> None:
    """Found by the test above: the duplicate-name check hashed the name (TypeError)."""
    doc = text([server(i) for i in range(40)] + ["{name: [x], address: a:1}"])
    with pytest.raises(ConfigError) as exc:
        full_load(doc)
    assert any(p.startswith("pools.web.servers[40].name") for p in exc.value.problems)
    assert outcome(load_text, doc, ParseCache()) == exc.value.problems


def test_two_new_lines_one_quote_across_them_are_one_server_as_yaml_says() -> None:
    """A quote opened on one new line and closed on the next: YAML reads one mapping of the
    two lines (parsed apart they would be two servers)."""
    cache = ParseCache()
    good = [server(i) for i in range(40)]
    load_text(text(good), cache)
    edited = [*good, "{name: x, address: 'a:1}", "{name: y, address: b'}"]
    assert_same_parse(cache, text(edited))
    assert outcome(load_text, text(edited), cache) == outcome(full_load, text(edited))


def test_an_alias_on_an_unchanged_line_follows_its_anchor() -> None:
    """Lines with an anchor or an alias are not cut: a reused line's alias would keep the
    value of an anchor since edited."""
    cache = ParseCache()
    good = [server(i) for i in range(40)]
    with_anchor = [*good, "{name: &n a1, address: a:1}", "{name: b1, address: *n}"]
    edited = [*good, "{name: &n a2, address: a:1}", "{name: b1, address: *n}"]
    for doc in (text(with_anchor), text(edited)):
        assert_same_parse(cache, doc)


@pytest.mark.parametrize(
    "head",
    ["a: &r\n  me: *r\n  b:\n", "a: &r\n  - *r\n  - b:\n"],  # a list that holds itself
    ids=["mapping", "list"],
)
def test_a_recursive_alias_beside_a_cut_list_is_parsed_whole(head: str) -> None:
    """(Walking the parse for the cut list's place would never end.)"""
    doc = head + "      servers:\n" + "".join(f"        - {server(i)}\n" for i in range(40))
    cache = ParseCache()
    assert cache.parse(doc) is None
    assert_same_parse(cache, doc)


def test_a_mapping_as_a_key_is_a_yaml_problem_not_a_crash() -> None:
    """Found by the test above: the duplicate-key check hashed the key (TypeError)."""
    with pytest.raises(ConfigError) as exc:
        full_load("pools:\n  {a: b}: 1\n")
    assert exc.value.problems == ["(yaml) line 2, column 3: found unhashable key"]
