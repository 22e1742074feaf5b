"""Avi's monitor editing sub-shell: ``quiesce configure healthmonitor NAME``.

Theory of operation
-------------------
The sequences of Avi's CLI work as they are, typed at a prompt or piped on stdin::

    : > configure healthmonitor System-HTTP
    : healthmonitor> http_monitor
    : healthmonitor:http_monitor> maintenance_response "under construction"
    : healthmonitor:http_monitor> maintenance_code 500
    : healthmonitor:http_monitor> no maintenance_response
    : healthmonitor:http_monitor> save
    : healthmonitor> save

:class:`MonitorEditor` is the whole grammar, with no I/O: it edits a copy of the monitor as
the API shows it. Naming a sub-object (``http_monitor``) enters it; ``FIELD VALUE`` sets a
field, and on a list field (``maintenance_code``, ``http_response_code``) appends; ``no FIELD``
clears a field, ``no FIELD VALUE`` removes one value of a list; ``save`` leaves a sub-object,
and at the top level saves the monitor (PUT, validated by the server exactly like the config
file). ``show`` prints the object being edited; ``exit`` leaves a sub-object, or quits without
saving at the top; ``?`` / ``help [FIELD]`` lists the fields here. A list field refuses a value
it already has; a new ``type`` drops the other types' sub-objects. From stdin every error is
collected with its line number and reported at the end, and nothing is saved.

Scalar values are sent as typed (``send_interval 5`` or ``5s``): the server's validation
converts and checks them, so the shell needs no second copy of the rules.
"""

from __future__ import annotations

import copy
import json
import shlex
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import click
from pydantic import BaseModel

from quiesce.config.models import HealthMonitor


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                return arg
    return None


def _is_list(annotation: Any) -> bool:
    if typing.get_origin(annotation) is list:
        return True
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return any(typing.get_origin(a) is list for a in typing.get_args(annotation))
    return False


def _fields(model: type[BaseModel]) -> dict[str, Any]:
    return {name: f.annotation for name, f in model.model_fields.items()}


@dataclass
class Outcome:
    """What one line did: text to print, an error, a save request, or the end."""

    text: str = ""
    error: str = ""
    save: bool = False
    done: bool = False


@dataclass
class MonitorEditor:
    name: str
    data: dict[str, Any]
    path: list[str] = field(default_factory=list)  # sub-object names entered

    @property
    def prompt(self) -> str:
        return ": " + ":".join(["healthmonitor", *self.path]) + "> "

    def _model(self) -> type[BaseModel]:
        model: type[BaseModel] = HealthMonitor
        for part in self.path:
            sub = _model_of(model.model_fields[part].annotation)
            assert sub is not None
            model = sub
        return model

    def _obj(self) -> dict[str, Any]:
        obj = self.data
        for part in self.path:
            obj = obj.setdefault(part, {})
        return obj

    def feed(self, line: str) -> Outcome:
        try:
            words = shlex.split(line, comments=False)
        except ValueError as exc:
            return Outcome(error=f"cannot parse {line.strip()!r}: {exc}")
        if not words:
            return Outcome()
        cmd, args = words[0], words[1:]
        if cmd in ("?", "help"):
            return Outcome(text=self.help(args[0] if args else None))
        if cmd == "save":
            if self.path:
                self.path.pop()
                return Outcome()
            return Outcome(save=True)
        if cmd in ("exit", "quit"):
            if self.path:
                self.path.pop()
                return Outcome()
            return Outcome(done=True, text="not saved")
        if cmd in ("show", "where"):
            return Outcome(text=json.dumps(self._obj(), indent=2))
        if cmd == "no":
            if not args:
                return Outcome(error="no: which field?")
            return self._clear(args[0], args[1:])
        return self._set(cmd, args)

    def help(self, name: str | None = None) -> str:
        """``?`` / ``help``: the commands, and the fields here with what each takes."""
        fields = _fields(self._model())
        if name is not None:
            if name not in fields:
                return self.help()
            return f"{name}: {_describe(fields[name])}"
        where = ":".join(["healthmonitor", *self.path])
        lines = [f"{where}: FIELD VALUE sets, no FIELD clears, no FIELD VALUE removes one value"]
        lines.append(
            "  show · save ("
            + ("leave" if self.path else "save the monitor")
            + ")"
            + " · exit ("
            + ("leave" if self.path else "quit unsaved")
            + ") · ? FIELD"
        )
        for field_name, annotation in fields.items():
            lines.append(f"  {field_name:<22} {_describe(annotation)}")
        return "\n".join(lines)

    def words(self) -> list[str]:
        """What may come first on a line here (for tab completion)."""
        return sorted([*_fields(self._model()), "no", "show", "save", "exit", "help"])

    def field_names(self) -> list[str]:
        return sorted(_fields(self._model()))

    def _field(self, name: str) -> Any:
        fields = _fields(self._model())
        if name not in fields:
            where = ":".join(["healthmonitor", *self.path])
            known = ", ".join(sorted(fields))
            raise KeyError(f"{where}: unknown field {name!r} (fields: {known})")
        return fields[name]

    def _set(self, name: str, args: list[str]) -> Outcome:
        try:
            annotation = self._field(name)
        except KeyError as exc:
            return Outcome(error=str(exc.args[0]))
        obj = self._obj()
        if _model_of(annotation) is not None:
            if args:
                return Outcome(error=f"{name} is a sub-object: enter it, then set its fields")
            obj.setdefault(name, {})
            self.path.append(name)
            return Outcome()
        if not args:
            return Outcome(error=f"{name}: a value is needed")
        if _is_list(annotation):
            current = obj.get(name)
            values = list(current) if isinstance(current, list) else []
            for a in args:
                v = _scalar(a)
                if v in values:
                    return Outcome(error=f"{name} already has {a}: {_shown(values)}")
                values.append(v)
            obj[name] = values
        elif len(args) > 1:
            return Outcome(error=f'{name} takes one value (quote it: {name} "a b")')
        else:
            obj[name] = args[0]
            if name == "type" and not self.path:
                return self._type_changed(args[0])
        return Outcome()

    def _type_changed(self, kind: str) -> Outcome:
        """A new type drops the sub-objects of the others (the server refuses them)."""
        wanted = f"{kind}_monitor"
        dropped = [sub for sub in _SUBOBJECTS if sub != wanted and self.data.pop(sub, None)]
        if dropped:
            return Outcome(text=f"type {kind}: {', '.join(dropped)} removed")
        return Outcome()

    def _clear(self, name: str, args: list[str]) -> Outcome:
        try:
            annotation = self._field(name)
        except KeyError as exc:
            return Outcome(error=str(exc.args[0]))
        obj = self._obj()
        if args and _is_list(annotation):
            values = list(obj.get(name) or [])
            for a in args:
                v = _scalar(a)
                if v not in values and a not in values:
                    return Outcome(error=f"{name} has no value {a}")
                values.remove(v if v in values else a)
            obj[name] = values
        else:
            obj.pop(name, None)
        return Outcome()


_SUBOBJECTS = (
    "http_monitor",
    "https_monitor",
    "tcp_monitor",
    "udp_monitor",
    "postgresql_monitor",
    "mysql_monitor",
    "grpc_monitor",
)


def _describe(annotation: Any) -> str:
    if _model_of(annotation) is not None:
        return "sub-object: type its name to enter it"
    if _is_list(annotation):
        return "list: each FIELD VALUE adds one, no FIELD VALUE removes one"
    text = str(annotation).replace("typing.", "").replace("NoneType", "none")
    return text if len(text) < 60 else text[:57] + "..."


def _shown(values: list[Any]) -> str:
    return " ".join(str(v) for v in values)


def _scalar(text: str) -> Any:
    return int(text) if text.lstrip("-").isdigit() else text


@dataclass
class Shell:
    """Drives a :class:`MonitorEditor` from lines; I/O through the callables given."""

    load: Callable[[str], dict[str, Any] | None]  # the monitor as the API shows it, or None
    save: Callable[[str, dict[str, Any]], dict[str, Any]]  # PUT; raises click.ClickException
    out: Callable[[str], None]
    err: Callable[[str], None]
    interactive: bool
    editor: MonitorEditor | None = None
    errors: list[str] = field(default_factory=list)  # from stdin: every error, with its line
    saves: int = 0
    lineno: int = 0

    @property
    def failed(self) -> str:
        return self.errors[-1] if self.errors else ""

    def completions(self, buffer: str, text: str) -> list[str]:
        """Tab completion: the words that may come at this point of ``buffer``."""
        if self.editor is None:
            words = ["configure", "exit"]
        else:
            before = buffer[: len(buffer) - len(text)].split()
            if not before:
                words = self.editor.words()
            elif before == ["no"] or (len(before) == 1 and before[0] in ("?", "help")):
                words = self.editor.field_names()
            else:
                words = []
        return [w for w in words if w.startswith(text)]

    def start(self, name: str) -> None:
        data = self.load(name)
        if data is None:
            data = {}
            self.out(f"new health monitor {name!r}: set its type first (type http)")
        data = copy.deepcopy(data)
        data.pop("name", None)
        self.editor = MonitorEditor(name, data)

    def prompt(self) -> str:
        return self.editor.prompt if self.editor else ": > "

    def line(self, text: str) -> bool:
        """Feed one line; False when the session is over."""
        self.lineno += 1
        if self.editor is None:
            words = text.split()
            if not words:
                return True
            if words[0] in ("exit", "quit"):
                return False
            if len(words) == 3 and words[0] == "configure" and words[1] == "healthmonitor":
                self.start(words[2])
                return True
            return self._error(f"expected: configure healthmonitor NAME, got {text.strip()!r}")
        outcome = self.editor.feed(text)
        if outcome.text:
            self.out(outcome.text)
        if outcome.error:
            return self._error(outcome.error)
        if outcome.done:
            self.editor = None
            return self.interactive
        if outcome.save:
            if self.errors:  # from stdin, with errors above: nothing is saved
                self.editor = None
                return False
            try:
                saved = self.save(self.editor.name, self.editor.data)
            except click.ClickException as exc:
                problems = getattr(exc, "problems", None) or [exc.format_message()]
                for problem in problems[:-1]:
                    self._error(problem)
                return self._error(problems[-1]) and self.interactive
            self.saves += 1
            self.out(f"health monitor {self.editor.name!r} saved")
            if self.interactive:
                self.out(json.dumps(saved, indent=2))
            self.editor = None
            return self.interactive
        return True

    def _error(self, message: str) -> bool:
        """Interactive: say it and go on. From stdin: note it with its line number and read
        on, so that every error is reported at once (and nothing is saved)."""
        if not self.interactive:
            self.errors.append(f"line {self.lineno}: {message}")
            return True
        self.err(f"quiesce: {message}")
        return True


__all__ = ["MonitorEditor", "Outcome", "Shell"]
