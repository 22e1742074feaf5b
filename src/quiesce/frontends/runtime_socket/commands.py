"""The runtime socket's commands: one input line in, the answer text out, no I/O.

State changes go through :class:`quiesce.admin.AdminService` with :data:`CONTEXT` (actor and
cause ``runtime-socket``), like every other front end's.
"""

from __future__ import annotations

import ipaddress
import itertools
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from pydantic import ValidationError

from quiesce.admin.context import CommandContext
from quiesce.admin.reload_gate import RELOADING
from quiesce.config.addresses import split_address
from quiesce.config.models import ServerConfig
from quiesce.core.errors import QuiesceError
from quiesce.core.states import Cause, Oper
from quiesce.frontends.runtime_socket.errors import CommandError, UnendedError
from quiesce.frontends.runtime_socket.info import Info
from quiesce.frontends.runtime_socket.stats import Stats
from quiesce.frontends.runtime_socket.takeover import write_refusal
from quiesce.state.registry import Registry, ServerRuntime

ACTOR = "runtime-socket"
CAUSE = Cause.RUNTIME_SOCKET
CONTEXT = CommandContext(ACTOR, CAUSE)
"""Every command of the socket: it has no authentication, so no user name."""
MAX_COMMANDS = 64  # ';'-separated commands on one line
READ_ONLY = ("show", "get")
"""First words of the commands still answered while a takeover hands over (the others
change state the new process would not see)."""
LEVELS = ("user", "operator", "admin")
"""HAProxy's ``stats socket ... level``, least privileged first: ``user`` reads the
non-sensitive stats, ``operator`` reads everything, ``admin`` may change anything. Which
command needs which: the table of :meth:`RuntimeCommands._table`."""
PERMISSION_DENIED = "Permission denied"
"""HAProxy 2.6's answer to a command above the socket's level (cli_permission_denied_msg)."""

# HAProxy 2.6's help lines ("  %-40s: %s"), for the commands this socket knows, in its order.
HELP: list[tuple[str, str]] = [
    ("add server <bk>/<srv>", "create a new server"),
    # HAProxy 2.6's "remove a dynamically added server": here any server, of the config
    # file too (then kept deleted over the file: docs/admin.md), as the API's DELETE
    ("del server <bk>/<srv>", "remove a server (in maintenance, no connection left)"),
    ("disable agent", "disable agent checks"),
    ("disable health", "disable health checks"),
    ("disable server (DEPRECATED)", "disable a server for maintenance (use 'set server' instead)"),
    ("enable agent", "enable agent checks"),
    ("enable health", "enable health checks"),
    ("enable server  (DEPRECATED)", "enable a disabled server (use 'set server' instead)"),
    ("get var <name>", "retrieve contents of a process-wide variable"),
    ("get weight <bk>/<srv>", "report a server's current weight"),
    ("reload", "re-read the config file and apply the difference (quiesce)"),
    ("set server <bk>/<srv> [opts]", "change a server's state, weight, address or ssl"),
    ("set var <name> <expression>", "set a process-wide variable (quiesce: a runtime flag)"),
    ("set weight <bk>/<srv>  (DEPRECATED)", "change a server's weight (use 'set server' instead)"),
    ("show backend", "list backends in the current running config"),
    ("show info [desc|json|typed|float]*", "report information about the running process"),
    (
        "show servers state [<backend>]",
        "dump volatile server information (all or for a single backend)",
    ),
    ("show sess [id]", "report the list of current sessions or dump this exact session"),
    ("show stat [desc|json|no-maint|typed|up]*", "report counters for each proxy and server"),
    ("show version", "show version of the current process"),
    ("shutdown sessions server <bk>/<srv>", "kill sessions on a server"),
]
ALWAYS = [
    ("help [<command>]", "list matching or all commands"),
    ("prompt", "toggle interactive mode with prompt"),
    ("quit", "disconnect"),
]


def _help_line(usage: str, text: str) -> str:
    return f"  {usage:<40}: {text}"


@dataclass
class Session:
    interactive: bool = False
    quit: bool = False
    level: str = "admin"
    """The listener's level (LEVELS): admin on the Unix socket (0600),
    ``admin.runtime_tcp_level`` on the TCP one."""


def allowed(level: str, needed: str) -> bool:
    """Whether a connection at ``level`` may run a command that needs ``needed``."""
    return LEVELS.index(level) >= LEVELS.index(needed)


class RuntimeCommands:
    """HAProxy runtime API commands against an App; ``execute`` returns the answer text."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.registry: Registry = app.registry
        self.started = self.registry.clock.time()
        self.stats = Stats(app, self.started)
        self.info = Info(app, self.stats, self.started)
        self.context = CONTEXT  # local=True for the rest of a line after "local"

    # dispatch ------------------------------------------------------------------------------------

    def execute(self, line: str, session: Session | None = None) -> str:
        """The answers to one input line (``;``-separated commands), each ending with an
        empty line."""
        session = session or Session()
        out = []
        commands = _split_commands(line)
        if len(commands) > MAX_COMMANDS:
            # One line must not make the shared event loop produce megabytes of answers.
            return f"Too many commands on one line (at most {MAX_COMMANDS}).\n\n"
        for command in commands:
            words = command.split()
            try:
                text = self._one(words, session) if words else self.empty()
            except CommandError as exc:
                if not exc.ended:
                    out.append(str(exc) + "\n")
                    continue
                text = str(exc)
            except QuiesceError as exc:
                text = exc.message
            except (ValueError, OverflowError) as exc:  # e.g. a 5000-digit number
                text = f"Invalid argument: {str(exc)[:200]}"
            if session.quit:
                break
            out.append(text + ("\n" if text and not text.endswith("\n") else "") + "\n")
            if session.interactive:  # HAProxy prompts after every command, ';' ones too
                out.append("> ")
        return "".join(out)

    def _table(self) -> list[tuple[list[str], str, Callable[[list[str]], str]]]:
        """Every command: its first words, the level it needs (HAProxy 2.6's
        ``cli_has_level`` for the same command; ``reload``, quiesce's, admin) and its
        handler. The one source of which command needs which level."""
        return [
            (["show", "stat"], "user", self.show_stat),
            (["show", "servers", "state"], "user", self.show_servers_state),
            (["show", "info"], "user", self.info.show_info),
            (["show", "version"], "user", self.info.show_version),
            (["show", "backend"], "user", self.info.show_backend),
            (["show", "sess"], "operator", self.info.show_sess),
            (["disable", "health"], "admin", lambda a: self.health_checks(a, False)),
            (["enable", "health"], "admin", lambda a: self.health_checks(a, True)),
            (["disable", "agent"], "admin", lambda a: self.agent(a, False)),
            (["enable", "agent"], "admin", lambda a: self.agent(a, True)),
            (["set", "server"], "admin", self.set_server),
            (["add", "server"], "admin", self.add_server),
            (["del", "server"], "admin", self.del_server),
            (["disable", "server"], "admin", lambda a: self._admin(a, "maint")),
            (["enable", "server"], "admin", lambda a: self._admin(a, "ready")),
            (["shutdown", "sessions", "server"], "admin", self.shutdown_sessions),
            (["set", "weight"], "admin", self.set_weight),
            (["get", "weight"], "user", self.get_weight),
            (["set", "var"], "admin", self.set_var),
            (["get", "var"], "operator", self.get_var),
            (["reload"], "admin", _reload_alone),
        ]

    def waits_for_reload(self, line: str) -> bool:
        """A line with a runtime change of a server (``add server``, ``del server``, ``set
        server .. addr|weight``, ``set weight``): run after a reload being applied has ended
        (quiesce.admin.reload_gate; review 14 R12, R13)."""
        for command in _split_commands(line):
            words = command.split()
            if _server_write(words[1:] if words[:1] == ["local"] else words):
                return True
        return False

    def level_needed(self, words: list[str]) -> str | None:
        """The level a command needs (None: not a command of the table)."""
        if words[:1] == ["local"]:
            words = words[1:]
        return next((lv for p, lv, _h in self._table() if words[: len(p)] == p), None)

    def _one(self, w: list[str], session: Session) -> str:
        if w[0] == "local" and len(w) > 1:
            # quiesce: a change of shared state on this node only while etcd is unreachable
            # (the CLI's --local); its events say detail.local
            self.context = replace(CONTEXT, local=True)
            try:
                return self._one(w[1:], session)
            finally:
                self.context = CONTEXT
        if w[0] == "help":
            return self.help(w[1:])
        if w == ["prompt"]:
            session.interactive = not session.interactive
            return ""
        if w[0] in ("quit", "exit"):
            session.quit = True
            return ""
        if w[0] in ("experimental-mode", "expert-mode") and len(w) <= 2:
            return ""
        for prefix, needed, handler in self._table():
            if w[: len(prefix)] == prefix:
                if not allowed(session.level, needed):
                    return PERMISSION_DENIED
                if w[0] not in READ_ONLY and (refused := write_refusal(self.app)) is not None:
                    return f"{refused[0].upper()}{refused[1:]}.\n"
                if _server_write(w) and getattr(self.app.admin, "reload_applying", False):
                    # waited RUNTIME_WAIT for the reload's end (server.py): nothing changed
                    return f"{RELOADING[0].upper()}{RELOADING[1:]} (nothing changed).\n"
                return handler(w[len(prefix) :])
        return self.unknown(w)

    async def reload(self, session: Session | None = None) -> str:
        """``reload``: re-read the config file and apply the difference (App.reload). The
        answer lists the changes, or every problem of the file (then nothing changed)."""
        from quiesce.config.loader import ConfigError

        if session is not None and not allowed(session.level, "admin"):  # _table's reload
            return PERMISSION_DENIED + "\n\n" + ("> " if session.interactive else "")
        try:
            plan = await self.app.reload(ACTOR, via=CAUSE.value)
        except ConfigError as exc:
            lines = [f"Reload refused: {len(exc.problems)} problem(s); nothing changed."]
            lines += [f"  {_printable(p)}" for p in exc.problems]
        except QuiesceError as exc:
            lines = [exc.message]
        else:
            lines = [f"Reloaded: {len(plan.changes)} change(s)."]
            lines += [f"  {_printable(c.message)}" for c in plan.changes]
            lines += [f"  kept: {_printable(c.message)}" for c in plan.kept]
            lines += [f"  warning: {_printable(w)}" for w in plan.warnings]
        out = "\n".join(lines) + "\n\n"
        if session is not None and session.interactive:
            out += "> "
        return out

    # help ----------------------------------------------------------------------------------------

    def help(self, words: list[str]) -> str:
        lines = ["The following commands are valid at this level:"]
        for usage, text in HELP:
            if not words or usage.split()[: len(words)] == words[: len(usage.split())]:
                lines.append(_help_line(usage, text))
        lines += [_help_line(u, t) for u, t in ALWAYS]
        return "\n".join(lines)

    def empty(self) -> str:
        """HAProxy 2.6's answer to an empty line: the whole help, under this heading."""
        lines = ["Unknown command. Please enter one of the following commands only:"]
        lines += [_help_line(u, t) for u, t in HELP + ALWAYS]
        return "\n".join(lines)

    def unknown(self, words: list[str]) -> str:
        """HAProxy 2.6's answer: the commands closest to what was typed, then help/prompt/quit."""
        matches = [h for h in HELP if h[0].split()[0] == words[0]]
        if not matches:
            matches = [h for h in HELP if set(h[0].split()) & set(words)]
        lines = ["Unknown command, but maybe one of the following ones is a better match:"]
        lines += [_help_line(u, t) for u, t in matches]
        lines += [_help_line(u, t) for u, t in ALWAYS]
        return "\n".join(lines)

    # lookups -------------------------------------------------------------------------------------

    def _server(self, ref: str | None) -> ServerRuntime:
        if not ref or "/" not in ref:
            raise CommandError("Require 'backend/server'.")
        pool_name, _, name = ref.partition("/")
        pool = self.registry.pools.get(pool_name)
        if pool is None:
            raise CommandError("No such backend.")
        server = next((s for s in pool.servers if s.name == name), None)
        if server is None:
            raise CommandError("No such server.")
        return server

    # state changes -------------------------------------------------------------------------------

    def set_server(self, a: list[str]) -> str:
        if len(a) < 2:
            raise CommandError(
                "usage: set server <backend>/<server> addr | agent | agent-addr | agent-port | "
                "agent-send | check-addr | check-port | fqdn | health | ssl | state | weight"
            )
        server = self._server(a[0])
        what, args = a[1], a[2:]
        if what == "state":
            if not args or args[0] not in ("ready", "drain", "maint"):
                raise CommandError("'set server <srv> state' expects 'ready', 'drain' and 'maint'.")
            return self._admin([a[0]], args[0])
        if what == "health":
            if not args or args[0] not in ("up", "stopping", "down"):
                raise CommandError("'set server <srv> health' expects 'up', 'stopping', or 'down'.")
            return self._health(server, args[0])
        if what == "weight":
            return self.set_weight([a[0], *args])
        if what == "addr":
            return self._set_addr(server, args)
        raise CommandError(f"'set server <srv> {what}' is not supported by quiesce.")

    # servers added, re-addressed and removed (issue 14) -------------------------------------

    def add_server(self, a: list[str]) -> str:
        """``add server <bk>/<srv> <addr>:<port> [weight N] [backup] [check] [enabled |
        disabled]``: HAProxy 2.6's words and answers. Unlike HAProxy's (added in
        maintenance), the server starts enabled and ``unknown`` until its pool's monitors pass
        (``unmonitored`` without). ``check`` is taken and changes nothing (the pool's monitors
        apply to every server of it); ``disabled`` starts it in maintenance, as HAProxy's."""
        if not a or "/" not in a[0]:
            raise UnendedError("Require 'backend/server'.")
        pool_name, _, name = a[0].partition("/")
        if pool_name not in self.registry.pools:
            raise UnendedError("No such backend.")
        if len(a) < 2:
            raise CommandError("'server' expects <name> and <addr>[:<port>] as arguments.")
        _require_port(a[1])
        data: dict[str, Any] = {"name": name, "address": a[1]}
        rest = a[2:]
        disabled = False
        while rest:
            word = rest.pop(0)
            if word == "backup":
                data["backup"] = True
            elif word in ("check", "enabled"):
                pass  # the pool's monitors apply (check); enabled is quiesce's start anyway
            elif word == "disabled":
                disabled = True
            elif word == "weight":
                value = rest.pop(0) if rest else ""
                if not re.fullmatch(r"[+-]?\d+", value):
                    raise CommandError(f"invalid weight '{value}' for server {name}.")
                if not 0 <= int(value) <= 256:
                    raise CommandError(  # "..": HAProxy 2.6's words (test_haproxy_parity)
                        f"weight of server {name} is not within 0 and 256 ({int(value)}).."
                    )
                data["weight"] = int(value)
            elif word == "maxconn":  # HAProxy's word for max_connections; 0: no limit
                value = rest.pop(0) if rest else ""
                if not re.fullmatch(r"\d+", value):
                    raise CommandError(f"invalid maxconn '{value}' for server {name}.")
                data["max_connections"] = int(value) or None
            elif word in _CHECK_KEYWORDS:  # valid in HAProxy: not "unknown", but not here
                raise CommandError(
                    f"'{word}' is a check setting: quiesce checks the servers of a pool with "
                    "its health monitors (send_interval, receive_timeout, successful_checks, "
                    "failed_checks); nothing changed."
                )
            else:
                raise CommandError(f"unknown keyword '{word}'.")
        if any(s.name == name for s in self.registry.pools[pool_name].servers):
            raise CommandError("Already exists a server with the same name in backend.")
        try:
            config = ServerConfig.model_validate(data)
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            field = ".".join(str(p) for p in first["loc"])
            message = str(first["msg"]).removeprefix("Value error, ")
            raise CommandError(f"invalid {field} '{data.get(field, '')}': {message}") from None
        server = self.app.admin.add_server(pool_name, config, self.context)
        warning = self.app.admin.add_warning
        if disabled:
            # (no min_servers_up guard: nothing relied on a server not there a moment ago)
            self.app.admin.maintenance(server.key, replace(self.context, force_guard=True))
        return "New server registered." + (f"\nWarning: {warning}." if warning else "")

    def del_server(self, a: list[str]) -> str:
        """``del server <bk>/<srv>``: only a server in maintenance (or drained to 0
        connections), as HAProxy 2.6; its answers have no empty line after them."""
        if not a or "/" not in a[0]:
            raise UnendedError("Require 'backend/server'.")
        pool_name, _, name = a[0].partition("/")
        pool = self.registry.pools.get(pool_name)
        if pool is None:
            raise UnendedError("No such backend.")
        server = next((s for s in pool.servers if s.name == name), None)
        if server is None:
            raise UnendedError("No such server.")
        why = self.registry.removable(server)
        if why is not None:
            raise UnendedError(why)
        self.app.admin.remove_server(server.key, self.context)
        raise UnendedError("Server deleted.")  # HAProxy 2.6 ends this answer so too

    def _set_addr(self, server: ServerRuntime, args: list[str]) -> str:
        """``set server <bk>/<srv> addr <ip> [port <port>]``, with HAProxy 2.6's answers
        (``srv_update_addr_port``) when it changes something. Bad input changes nothing:
        HAProxy applies the IP of ``addr <ip> port <bad>`` and answers both; quiesce refuses
        the whole line and says that nothing changed. ``port 0`` (HAProxy: the client's
        destination port) is refused as not supported."""
        if not args:
            raise CommandError("set server <b>/<s> addr requires an address and optionally a port.")
        ip = args[0]
        by = " by 'stats socket command'"
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            raise CommandError(f"Invalid addr '{ip}'{by}") from None
        port = server.port
        port_given = len(args) >= 2 and args[1] == "port"
        extra = args[3:] if port_given else args[1:]
        if extra:
            raise CommandError(
                f"unexpected '{' '.join(extra)}': set server <b>/<s> addr <ip> [port <port>]; "
                "nothing changed."
            )
        if port_given:
            port = _addr_port(args[2] if len(args) >= 3 else "")
        old_host, old_port = server.host, server.port
        address = f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
        split_address(address)
        if (ip, port) != (old_host, old_port):
            self.app.admin.update_server(server.key, {"address": address}, self.context)
        parts = [
            "no need to change the addr"
            if ip == old_host
            else f"IP changed from '{old_host}' to '{ip}'"
        ]
        if port_given:
            parts.append(
                "no need to change the port"
                if port == old_port
                else f"port changed from '{old_port}' to '{port}'"
            )
        return ", ".join(parts) + by

    def _admin(self, a: list[str], state: str) -> str:
        server = self._server(a[0] if a else None)
        admin = self.app.admin
        if state == "ready":
            admin.enable(server.key, self.context)
        elif state == "drain":
            admin.drain(server.key, self.context)
        else:
            admin.maintenance(server.key, self.context)
        return ""

    def _health(self, server: ServerRuntime, state: str) -> str:
        """Force the operational state as HAProxy does: every monitor's track is set, and the
        next check result moves it on from there. A server with no monitor is unchanged."""
        target = Oper.UP if state == "up" else Oper.DOWN
        self.app.admin.force_health(server.key, target, self.context, forced=state)
        return ""

    def health_checks(self, a: list[str], enabled: bool) -> str:
        """``disable|enable health <bk>/<srv>``: the server's checks off (its state stays as it
        is, results are ignored) or on again. Enabling a server with no monitor is HAProxy's
        error; disabling one is accepted and changes nothing."""
        server = self._server(a[0] if a else None)
        if not server.monitors:
            if enabled:
                raise CommandError("Health check was not configured on this server, cannot enable.")
            return ""
        self.app.admin.set_health_checks(server.key, enabled, self.context)
        return ""

    def agent(self, a: list[str], enabled: bool) -> str:
        """``disable|enable agent <bk>/<srv>``: quiesce has no agent checks, so every server
        answers as HAProxy's do without an ``agent-check``: disabling is accepted (nothing to
        do), enabling is refused."""
        self._server(a[0] if a else None)
        if enabled:
            raise CommandError("Agent was not configured on this server, cannot enable.")
        return ""

    def shutdown_sessions(self, a: list[str]) -> str:
        server = self._server(a[0] if a else None)
        self.app.admin.shutdown_sessions(
            server.key, replace(self.context, reason="shutdown sessions server")
        )
        return ""

    def set_weight(self, a: list[str]) -> str:
        server = self._server(a[0] if a else None)
        if len(a) < 2:
            raise CommandError("Require <weight> or <weight%>.")
        # HAProxy parses with strtol: a sign is allowed, then digits, then only "%".
        m = re.match(r"^([+-]?\d+)(.*)$", a[1])
        if m is None:
            raise UnendedError("Empty weight string empty or preceded by garbage")
        value, rest = int(m.group(1)), m.group(2)
        relative = rest == "%"
        if rest and not relative:
            raise UnendedError("Trailing garbage in weight string")
        if relative:
            if value < 0:
                raise CommandError("Relative weight must be positive.")
            weight = server.config.weight * value // 100
            if weight > 256:
                raise CommandError("Relative weight is too high.")
        else:
            weight = value
            if not 0 <= weight <= 256:
                raise CommandError("Absolute weight can only be between 0 and 256 inclusive.")
        self.app.admin.set_weight(server.key, weight, self.context)
        return ""

    def get_weight(self, a: list[str]) -> str:
        server = self._server(a[0] if a else None)
        return f"{server.weight} (initial {server.config.weight})"

    # variables = runtime flags ------------------------------------------------------------------

    def set_var(self, a: list[str]) -> str:
        if not a:
            raise CommandError("Missing variable name.")
        name = a[0]
        if not name.startswith("proc."):
            raise CommandError(
                f"invalid variable name '{name}'. A variable name must be start by its scope. "
                "The scope can be 'proc', 'sess', 'txn', 'req', 'res' or 'check'"
            )
        if len(a) < 2:
            raise CommandError("Missing variable expression.")
        value = parse_expression(" ".join(a[1:]))
        self.app.admin.set_flag(name[5:], value, self.context)
        return ""

    def get_var(self, a: list[str]) -> str:
        if not a:
            raise CommandError("Missing variable name.")
        name = a[0]
        if not name.startswith("proc."):
            raise CommandError(
                f"invalid variable name '{name}'. A variable name must be start by its scope. "
                "The scope can be 'proc', 'sess', 'txn', 'req', 'res' or 'check'"
            )
        flags = self.registry.flags
        if name[5:] not in flags:
            raise CommandError("Variable not found.")
        value = flags[name[5:]]
        if isinstance(value, bool):
            return f"{name}: type=bool value=<{int(value)}>"
        return f"{name}: type=str value=<{_printable(value)}>"

    # show stat, show servers state (stats.py) -----------------------------------------------------

    def show_stat(self, a: list[str]) -> str:
        return self.stats.show_stat(a)

    def stream(self, line: str, session: Session) -> Iterator[str] | None:
        """``show stat`` or ``show servers state`` alone on its line (issue 21, review F8):
        its answer in parts (Stats.show_stat_parts, show_servers_state_parts) then the empty
        line that ends it (and the prompt), for the socket to send each as it is made; None
        for any other line and for one that fails (:meth:`execute` answers those whole)."""
        commands = _split_commands(line)
        words = commands[0].split() if len(commands) == 1 else []
        needed = self.level_needed(words)
        if needed is None or not allowed(session.level, needed):  # execute() says why
            return None
        if words[:2] == ["show", "stat"]:
            parts = self.stats.show_stat_parts(words[2:])
        elif words[:3] == ["show", "servers", "state"]:
            parts = self.stats.show_servers_state_parts(words[3:])
        else:
            return None
        try:
            first = next(parts)
        except (QuiesceError, ValueError, OverflowError):  # CommandError is a QuiesceError
            return None
        return itertools.chain([first], parts, ["\n> " if session.interactive else "\n"])

    def show_servers_state(self, a: list[str]) -> str:
        return self.stats.show_servers_state(a)


def _reload_alone(_args: list[str]) -> str:
    """``reload`` among other commands of a line: it re-reads the file and binds, so it
    is answered only alone on its line (RuntimeSocket._answer awaits it)."""
    raise CommandError("'reload' must be alone on its line.")


_EXPR = re.compile(r"^\s*(bool|str|int|sint)\((.*)\)\s*$")


def parse_expression(text: str) -> bool | str:
    """HAProxy's sample expressions for ``set var``: ``bool(true)``, ``str(x)``, ``int(5)``."""
    m = _EXPR.match(text)
    if m is None:
        fetch = text.strip().split("(")[0]
        raise CommandError(f"unknown fetch method '{fetch}'")
    kind, arg = m.group(1), m.group(2).strip()
    if kind == "bool":
        if arg.lower() in ("1", "true"):
            return True
        if arg.lower() in ("0", "false"):
            return False
        raise CommandError(f"failed to parse bool '{arg}'")
    if kind in ("int", "sint"):
        if not re.fullmatch(r"-?\d+", arg):
            raise CommandError(f"failed to parse integer '{arg}'")
        return str(int(arg))
    if len(arg) >= 2 and arg[0] == arg[-1] and arg[0] in "\"'":
        arg = arg[1:-1]
    return arg


def _printable(text: str) -> str:
    """Control characters escaped: a value must never end an answer (an empty line) early."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


_CHECK_KEYWORDS = frozenset({"inter", "fastinter", "downinter", "rise", "fall"})
"""HAProxy's per-server check settings (``add server … check inter 2s rise 3``)."""


def _server_write(w: list[str]) -> bool:
    """A command that adds, removes or redefines a server (what a reload plans over)."""
    if w[:2] in (["add", "server"], ["del", "server"], ["set", "weight"]):
        return True
    return w[:2] == ["set", "server"] and len(w) > 3 and w[3] in ("addr", "weight")


def _split_commands(line: str) -> list[str]:
    """``;`` separates commands; ``\\;`` is a literal semicolon (HAProxy's escaping)."""
    out, cur, i = [], "", 0
    while i < len(line):
        c = line[i]
        if c == "\\" and i + 1 < len(line) and line[i + 1] == ";":
            cur += ";"
            i += 2
            continue
        if c == ";":
            out.append(cur)
            cur = ""
        else:
            cur += c
        i += 1
    out.append(cur)
    return [c.strip() for c in out]


def _require_port(address: str) -> None:
    """``add server``'s address must carry its port (HAProxy's may omit it: the client's
    destination port, which quiesce does not do)."""
    has_port = "]:" in address if address.startswith("[") else address.count(":") == 1
    if not has_port:
        raise CommandError(
            f"invalid address '{address}': the port is required (<addr>:<port>, 1 to 65535; "
            "quiesce has no server without a port)."
        )


def _addr_port(text: str) -> int:
    """The port of ``set server … addr <ip> port <port>``, or a CommandError saying that
    nothing changed."""
    if not (text.isascii() and text.isdigit()):
        raise CommandError(
            f"problem converting port '{text}' to an int (a port is 1 to 65535); nothing changed."
        )
    port = int(text)
    if port == 0:
        raise CommandError(
            "port 0 is not supported by quiesce (HAProxy takes it as the client's "
            "destination port): give 1 to 65535; nothing changed."
        )
    if port > 65535:
        raise CommandError(f"port {text} is out of range (1 to 65535); nothing changed.")
    return port
