"""The ``quiesce`` command, the process's entry point: the server verbs (``run``, ``demo``,
``check``, ``passwd``) defined here, and the maxctrl-style client verbs of
:mod:`quiesce.frontends.cli`, which only speak HTTP to a running quiesce. Everything heavy is
imported inside the verb that needs it, so ``quiesce list servers`` starts fast."""

from __future__ import annotations

import getpass
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

# Before the imports below: SIGHUP and SIGUSR1 (whose default action ends a process) held from
# the first line of `quiesce run` until its event loop handles them (quiesce.app.run): a
# SIGHUP during start-up (a second or more; every --takeover's new process, which systemctl
# kill -s HUP reaches too) killed it, exit 129, no log line (review 14 R4).
_EARLY_SIGNALS = (signal.SIGHUP, signal.SIGUSR1)
_early: list[int] = []
"""The SIGHUP/SIGUSR1 numbers that came before ``run``'s loop handled them, in order."""
_early_previous: dict[int, Any] = {}


def _hold(signum: int, _frame: object) -> None:
    _early.append(signum)  # only this: a signal handler (the log is not safe here)


def _hold_early_signals(*, argv: list[str] | None = None) -> None:
    """From now on a SIGHUP or SIGUSR1 is remembered (:data:`_early`) instead of ending the
    process, for ``quiesce run`` (``argv``: at import, the command line names it; else
    unconditionally, as ``run`` starts). A signal the process was started ignoring
    (``nohup``) stays ignored. Only the main thread can set handlers. Then unblocked: a
    process started with them blocked (``quiesce upgrade`` starts ``run`` so, which closes
    the window of the interpreter's own start) gets those sent meanwhile now."""
    if argv is not None:
        prog = Path(argv[0]) if argv else Path()
        ours = prog.name == "quiesce" or prog.parts[-2:] == ("quiesce", "__main__.py")
        mp = sys.modules.get("multiprocessing")  # the reload worker has run's argv too
        verbs = {"run", "upgrade"}  # upgrade: a SIGHUP while it starts (review 90 F2)
        if not ours or not verbs & set(argv[1:]) or (mp is not None and mp.parent_process()):
            return
    for sig in _EARLY_SIGNALS:
        try:
            if sig not in _early_previous and signal.getsignal(sig) is signal.SIG_DFL:
                _early_previous[sig] = signal.signal(sig, _hold)
        except ValueError:  # not the main thread (imported by a thread)
            return
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _EARLY_SIGNALS)


def _release_early_signals() -> None:
    """A verb other than ``run`` (the command line only looked like one): the default actions
    back, and a signal held meanwhile delivered again, as if never held."""
    for sig, previous in _early_previous.items():
        if signal.getsignal(sig) is _hold:
            signal.signal(sig, previous)
    _early_previous.clear()
    held = list(dict.fromkeys(_early))
    _early.clear()
    for sig in held:
        signal.raise_signal(sig)


_hold_early_signals(argv=sys.argv)

import click  # noqa: E402

from quiesce.frontends.cli import (  # noqa: E402
    DurationType,
    client_options,
    register_client_verbs,
    settings_from,
)

if TYPE_CHECKING:
    from quiesce.config import Config


def _load_or_exit(config_path: str, *, packed: bool = False) -> Config:
    """Load the config, or print every problem with its path and exit 1. Warnings are
    printed and do not stop anything. ``packed``: for a process that keeps it
    (:func:`~quiesce.config.packed.load_packed`). (Imported here: the client verbs start
    without the config models.)"""
    from quiesce.config.loader import ConfigError, config_warnings, load_config
    from quiesce.config.packed import load_packed

    try:
        config = load_packed(config_path) if packed else load_config(config_path)
    except ConfigError as exc:
        click.echo(f"{config_path}: {len(exc.problems)} problem(s)", err=True)
        for problem in exc.problems:
            click.echo(f"  {problem}", err=True)
        sys.exit(1)
    for warning in config_warnings(config, Path(config_path).resolve().parent):
        click.echo(f"warning: {warning}", err=True)
    for warning in _reload_refused(config):
        click.echo(f"warning: {warning}", err=True)
    return config


def _reload_refused(config: Config) -> list[str]:
    """A file ``quiesce run`` starts with but ``quiesce reload`` refuses to switch a
    running process to (quiesce.state.reload.refusals; docs/admin.md, "Live reload"):
    said by ``check`` and at a start."""
    out = []
    if not config.admin.users and not config.admin.tokens:
        out.append(
            f"admin.users: no user and no admin.tokens: no client can log in to the admin "
            f"API on {config.admin.listen} (quiesce reload refuses to switch a process "
            "with users or tokens to such a file)"
        )
    if not config.services:
        out.append(
            "services: none: nothing is served (quiesce reload refuses a file with no "
            "service while services run)"
        )
    return out


def _busy_listeners(config: Config) -> list[str]:
    """Listen addresses this machine will not give a listener now (a port in use, an
    address it does not have), tried by binding each one (SO_REUSEADDR, as ``run`` binds;
    closed at once). Warnings, not problems: a ``quiesce run`` of this file already serving
    holds its own ports, and a reload keeps the listeners it has (it reports a busy new
    one itself)."""
    import socket

    from quiesce.config.addresses import split_address

    named = [(f"services.{n}.listen", s.listen) for n, s in config.services.items()]
    named.append(("admin.listen", config.admin.listen))
    if config.admin.runtime_tcp:
        named.append(("admin.runtime_tcp", config.admin.runtime_tcp))
    out = []
    for path, address in named:
        host, port = split_address(address)
        if port == 0:
            continue
        try:
            infos = socket.getaddrinfo(
                host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )
            for family, kind, proto, _, addr in dict.fromkeys(infos):
                with socket.socket(family, kind, proto) as sock:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    if family == socket.AF_INET6:
                        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                    sock.bind(addr)
        except OSError as exc:
            out.append(
                f"{path}: cannot listen on {address} now ({exc.strerror or exc}); fine if "
                "it is this file's quiesce that holds it"
            )
    return out


def _descriptor_problem(config: Config) -> str | None:
    """What ``quiesce run`` would refuse at start for the connection budget
    (quiesce.dataplane.limits.plan, App._plan_connections), measured against this
    process's RLIMIT_NOFILE raised to its hard limit as ``run`` raises it: the same
    machine and user usually, not under systemd's LimitNOFILE= or another ulimit."""
    from quiesce.dataplane.limits import LimitError, plan, raise_nofile

    nofile = raise_nofile()
    try:
        plan(config, nofile)
    except LimitError as exc:
        return (
            f"limits: {exc} (measured against this process's RLIMIT_NOFILE {nofile}; "
            "quiesce run under another limit may differ)"
        )
    return None


@click.command("check")
@click.option(
    "-c",
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="The YAML config file to validate.",
)
def check_cmd(config_path: str) -> None:
    """Validate a config file: exit 0, or 1 with every problem and its path."""
    config = _load_or_exit(config_path)
    from quiesce.health.capabilities import library_problems

    for problem in library_problems(config):  # quiesce run refuses these
        click.echo(f"warning: {problem}", err=True)
    for busy in _busy_listeners(config):
        click.echo(f"warning: {busy}", err=True)
    if (refused := _descriptor_problem(config)) is not None:  # and this
        click.echo(f"{config_path}: 1 problem(s)", err=True)
        click.echo(f"  {refused}", err=True)
        sys.exit(1)
    servers = sum(len(p.servers) for p in config.pools.values())
    click.echo(
        f"{config_path}: ok ({len(config.services)} service(s), {len(config.pools)} pool(s), "
        f"{servers} server(s), {len(config.healthmonitors)} health monitor(s))"
    )


@click.command("passwd")
def passwd_cmd() -> None:
    """Read a password (from stdin when it is not a terminal) and print its hash for the
    config's admin.users[].password_hash."""
    from quiesce.security import hash_password

    if sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            raise click.ClickException("the passwords differ")
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise click.ClickException("the password is empty")
    click.echo(hash_password(password))


_F = TypeVar("_F", bound=Callable[..., Any])


def _config_option(text: str) -> Callable[[_F], _F]:
    """``-c/--config FILE`` of the verbs that start a server (``run``, ``upgrade``)."""
    return click.option(
        "-c", "--config", "config_path", required=True, type=click.Path(dir_okay=False), help=text
    )


def _takeover_socket_option(text: str) -> Callable[[_F], _F]:
    """``--takeover-socket PATH``: the runtime socket of the quiesce to take over."""
    return click.option(
        "--takeover-socket",
        "takeover_socket",
        type=click.Path(dir_okay=False),
        default=None,
        help=f"The runtime socket of the quiesce to take over ({text}).",
    )


@click.command("run")
@_config_option("The YAML config file.")
@click.option(
    "--grace",
    default="10s",
    show_default=True,
    type=DurationType(seconds=True),
    help="How long in-flight requests may finish on SIGINT/SIGTERM (5s, 500ms, 1m; or seconds).",
)
@click.option(
    "--takeover",
    is_flag=True,
    help="Upgrade: take the listening sockets of the quiesce running on the runtime socket "
    "(admin.runtime_socket, or --takeover-socket), then let it finish and exit.",
)
@_takeover_socket_option("implies --takeover")
def run_cmd(config_path: str, grace: float, takeover: bool, takeover_socket: str | None) -> None:
    """Run the balancer from a config file until SIGINT or SIGTERM (or until a new
    process takes its listeners over).

    Signals: SIGINT/SIGTERM stop (in-flight requests get --grace), SIGHUP reloads the config
    file (as `quiesce reload`), SIGUSR1 reopens the access log (after logrotate); either one
    during start-up is done once ready. Upgrade without closing a listener: start the new
    version with --takeover (or `quiesce upgrade`, which waits for the outcome); it takes
    this one's sockets over its runtime socket, and this one finishes its requests and
    exits."""
    _hold_early_signals()  # held since the import already, unless started another way
    from quiesce.app import run_forever

    config = _load_or_exit(config_path, packed=True)
    base_dir = Path(config_path).resolve().parent
    path: Path | None = None
    if takeover_socket is not None:
        path = Path(takeover_socket).absolute()
    elif takeover:
        if not config.admin.runtime_socket:
            raise click.UsageError(
                "--takeover needs admin.runtime_socket in the config, or --takeover-socket PATH"
            )
        path = Path(config.admin.runtime_socket)
        path = path if path.is_absolute() else base_dir / path
    sys.exit(
        run_forever(
            config,
            base_dir,
            grace=grace,
            takeover=path,
            config_path=Path(config_path).resolve(),
            early_signals=_early,
        )
    )


READY_FD_ENV = "QUIESCE_READY_FD"
"""quiesce.app.run.READY_FD_ENV (not imported from there: that imports the whole server):
the descriptor a ``quiesce run`` writes one line to once ready (after a takeover: once it
has taken over) and closes."""


@click.command("upgrade")
@_config_option("The YAML config file of the new process.")
@click.option(
    "--grace",
    default="10s",
    show_default=True,
    type=DurationType(),
    help="The new process's --grace (quiesce run).",
)
@_takeover_socket_option("default: admin.runtime_socket")
@click.option(
    "--timeout",
    default="120s",
    show_default=True,
    type=DurationType(seconds=True),
    callback=lambda ctx, param, value: _positive(value, param, ctx),
    help="How long to wait for the new process to take over.",
)
def upgrade_cmd(config_path: str, grace: str, takeover_socket: str | None, timeout: float) -> None:
    """Seamless upgrade that reports its outcome (systemd's ExecReload): start `quiesce run
    -c FILE --takeover` in the background (its own session, this command's stdout and
    stderr) and return once it has taken over (exit 0; it goes on serving) or failed (its
    exit status; a quiesce that was running serves on). Not taken over after --timeout: exit 1,
    the new process left to finish or give up on its own."""
    args = ["run", "-c", config_path, "--grace", grace, "--takeover"]
    if takeover_socket is not None:
        args += ["--takeover-socket", takeover_socket]
    code = _upgrade(args, timeout)
    # and on its way out: the interpreter's exit puts SIG_DFL back where Python handlers
    # were, so a SIGHUP then still ended it (exit 129 for a takeover done); an ignore now
    # is inherited by no one (the new process is started)
    for sig in _EARLY_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    sys.exit(code)


def _positive(value: float, param: click.Parameter, ctx: click.Context) -> float:
    if value <= 0:  # 0s always failed, the new process then taking over anyway (review 90 F6)
        raise click.BadParameter(f"{value:g}s: give a duration above 0 (e.g. 120s)", ctx, param)
    return value


def _upgrade_ignores(signum: int, _frame: object) -> None:
    """SIGHUP / SIGUSR1 to ``quiesce upgrade``: nothing to reload or reopen here."""


def _upgrade_takes_signals() -> None:
    """``quiesce upgrade`` ignores SIGHUP and SIGUSR1 for its whole life (held since the
    import, then this handler). `systemctl kill -s HUP quiesce` (what contrib/quiesce.service
    says after editing the file) signals every process of the unit, ExecReload's `quiesce
    upgrade` too: their default action ended it (exit 129/138) while the takeover went on,
    and `systemctl reload` failed (review 90 F2). A handler, not SIG_IGN: an ignore would be
    inherited by the new process, which would never reload on SIGHUP; exec resets a handler.
    One the process was started ignoring (``nohup``) stays ignored."""
    for sig in _EARLY_SIGNALS:
        if signal.getsignal(sig) is not signal.SIG_IGN:
            signal.signal(sig, _upgrade_ignores)
    _early_previous.clear()
    _early.clear()  # held meanwhile: nothing to do with them either
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _EARLY_SIGNALS)


def _upgrade(args: list[str], timeout: float) -> int:
    """``quiesce ARGS`` started with the write end of a pipe as its readiness descriptor
    (:data:`READY_FD_ENV`); its line read, or its exit status once the pipe ends."""
    import select
    import subprocess
    import time

    read, write = os.pipe()
    # blocked in the new process from its exec until quiesce.main's handler takes them
    # (_hold_early_signals): a SIGHUP to it (systemctl kill) never finds it defenceless
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, _EARLY_SIGNALS)
    try:
        child = subprocess.Popen(
            [sys.executable, "-m", "quiesce", *args],
            env={**os.environ, READY_FD_ENV: str(write)},
            pass_fds=(write,),
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # not stopped with this command's terminal or group
        )
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        os.close(write)
    said = b""
    deadline = time.monotonic() + timeout
    with os.fdopen(read, "rb", buffering=0) as pipe:
        while b"\n" not in said:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([pipe], [], [], left)[0]:
                click.echo(
                    f"quiesce upgrade: the new process (pid {child.pid}) has not taken over "
                    f"after {timeout:g}s; left running: it takes over or gives up on its "
                    "own (its log says which)",
                    err=True,
                )
                return 1
            chunk = pipe.read(512)
            if not chunk:
                break
            said += chunk
    if b"\n" in said:
        click.echo(f"quiesce upgrade: {said.decode(errors='replace').strip()}")
        return 0
    code = child.wait()
    click.echo(
        f"quiesce upgrade: the new process (pid {child.pid}) exited with status {code} "
        "without taking over (its output above says why); nothing was handed over: a quiesce "
        "that was running serves on",
        err=True,
    )
    return code if code > 0 else 1


@click.command("demo")
@click.option(
    "--port",
    default=8080,
    show_default=True,
    type=int,
    help="Port of the balanced HTTP service (0 = any free port).",
)
@click.option(
    "--admin-port",
    default=9900,
    show_default=True,
    type=int,
    help="Port of the admin API and dashboard (0 = any free port).",
)
@click.option(
    "--traffic/--no-traffic",
    default=True,
    show_default=True,
    help="Send a few requests a second through the service, so the counters move.",
)
def demo_cmd(port: int, admin_port: int, traffic: bool) -> None:
    """Start a self-contained demo: three back ends, a balanced service, the admin API."""
    from quiesce.demo import run_demo

    for name, value in (("--port", port), ("--admin-port", admin_port)):
        if not 0 <= value <= 65535:
            raise click.BadParameter(f"port {value} is out of range (0-65535)", param_hint=name)
    sys.exit(run_demo(port=port, admin_port=admin_port, traffic=traffic))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="quiesce")
@client_options
@click.pass_context
def main(ctx: click.Context, /, **options: Any) -> None:
    """quiesce: a load balancer that takes servers out without losing a request."""
    if ctx.invoked_subcommand == "upgrade":
        _upgrade_takes_signals()
    elif ctx.invoked_subcommand != "run":
        _release_early_signals()
    ctx.obj = settings_from(options)


for _cmd in (run_cmd, upgrade_cmd, demo_cmd, check_cmd, passwd_cmd):
    main.add_command(_cmd)
register_client_verbs(main)

__all__ = ["main"]
