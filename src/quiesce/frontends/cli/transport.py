"""How the CLI client reaches the REST API: the global options (maxctrl's ``--hosts``,
``--user``, ``--password``, ``--secure``, ``--tls-*``, ``--timeout``, each also read from a
``QUIESCE_*`` environment variable), the settings they make, and :class:`Api`, one HTTP client
over them with one-line errors (:class:`ClientError`). Shared by the verbs (``client``) and the
monitor sub-shell (``configure``); imports nothing else of the CLI."""

from __future__ import annotations

import base64
import dataclasses
import json
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import click

from quiesce.config.durations import parse_duration

if TYPE_CHECKING:
    import http.client
    import ssl

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_HOSTS = "127.0.0.1:9900"
HANDOVER_WAIT = 30.0
"""Seconds a verb keeps sending a request again that a quiesce handing over to a new process
(``quiesce run --takeover``) answered 503 ``handing over``: at most the new process's wait
for its first checks. So too a runtime change of a server answered 503 ``reloading`` (it
waited 5 s for a reload being applied to end; quiesce.admin.reload_gate)."""
HANDOVER_RETRY = 0.25


# --- global options (the `quiesce` group) ----------------------------------------------------


@dataclass
class ClientSettings:
    hosts: str = DEFAULT_HOSTS
    user: str | None = None
    password: str | None = None
    token: str | None = None
    secure: bool = False
    tls_key: str | None = None
    tls_cert: str | None = None
    tls_ca_cert: str | None = None
    tls_verify_server_cert: bool = True
    timeout: float = 10.0
    json: bool = False
    local: bool = False  # changes with ?local=true: this node only while etcd is unreachable


def _timeout(value: str | float) -> float:
    """maxctrl's --timeout: plain milliseconds, or a duration with a unit."""
    text = str(value).strip()
    try:
        return float(text) / 1000.0
    except ValueError:
        pass
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def client_options(f: F) -> F:
    """The global client options, for the ``quiesce`` group (see ``quiesce.frontends.cli``)."""
    opts = [
        click.option(
            "--hosts",
            envvar="QUIESCE_HOSTS",
            default=DEFAULT_HOSTS,
            show_default=True,
            help="Admin API host:port (comma-separated list: the first that answers).",
        ),
        click.option("-u", "--user", envvar="QUIESCE_USER", help="User name (HTTP Basic)."),
        click.option("-p", "--password", envvar="QUIESCE_PASSWORD", help="Password."),
        click.option("--token", envvar="QUIESCE_TOKEN", help="Bearer token instead of a user."),
        click.option("-s", "--secure", is_flag=True, envvar="QUIESCE_SECURE", help="Use HTTPS."),
        click.option("--tls-key", envvar="QUIESCE_TLS_KEY", help="Client private key (PEM)."),
        click.option("--tls-cert", envvar="QUIESCE_TLS_CERT", help="Client certificate (PEM)."),
        click.option(
            "--tls-ca-cert", envvar="QUIESCE_TLS_CA_CERT", help="CA that signed the server cert."
        ),
        click.option(
            "--tls-verify-server-cert/--no-tls-verify-server-cert",
            envvar="QUIESCE_TLS_VERIFY_SERVER_CERT",
            default=True,
            show_default=True,
            help="Verify the server's certificate.",
        ),
        click.option(
            "-t",
            "--timeout",
            envvar="QUIESCE_TIMEOUT",
            default="10000",
            show_default=True,
            help="Request timeout: milliseconds, or a duration (10s).",
        ),
        click.option(
            "--json", "json_output", is_flag=True, envvar="QUIESCE_JSON", help="JSON output."
        ),
        click.option(
            "--local",
            is_flag=True,
            help="While the node cannot reach etcd: change that node only (else refused).",
        ),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


class DurationType(click.ParamType[Any]):
    """A duration option: ``500ms``, ``5s``, ``2m``, ``1h``, ``1d`` or plain seconds (as the
    config file takes them); with ``infinite``, also ``infinite`` / ``-1``. The value stays
    the text typed (the API parses it again), checked here so a bad one is a usage error
    before anything is sent."""

    name = "duration"

    def __init__(self, *, infinite: bool = False, seconds: bool = False) -> None:
        self.infinite = infinite
        self.seconds = seconds  # convert to float seconds (for the server verbs)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value) if self.seconds else value
        text = str(value).strip()
        if self.infinite and text.lower() in ("infinite", "-1"):
            return text
        try:
            seconds = parse_duration(text)
        except ValueError as exc:
            hint = " (or infinite)" if self.infinite else ""
            self.fail(f"{exc}{hint}", param, ctx)
        return seconds if self.seconds else text


def _global_after_verb(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    """A global option given after the verb: it replaces what the group made of the command
    line and the environment (``quiesce list servers --hosts H`` = ``quiesce --hosts H list
    servers``)."""
    if value is None or param.name is None:
        return
    root = ctx.find_root()
    current = root.obj if isinstance(root.obj, ClientSettings) else ClientSettings()
    name = param.name.removeprefix("after_")
    if name == "timeout":
        value = _timeout(value)
    root.obj = dataclasses.replace(current, **{name: value})


def after_verb_options(taken: set[str]) -> list[click.Option]:
    """Hidden copies of the global options for a verb's own options, leaving out the names
    the verb already uses for something else (``set server … --timeout`` is the drain's)."""
    specs: list[tuple[list[str], str, dict[str, Any]]] = [
        (["--hosts"], "hosts", {}),
        (["-u", "--user"], "user", {}),
        (["-p", "--password"], "password", {}),
        (["--token"], "token", {}),
        (["-s", "--secure"], "secure", {"is_flag": True, "flag_value": True, "default": None}),
        (["--tls-key"], "tls_key", {}),
        (["--tls-cert"], "tls_cert", {}),
        (["--tls-ca-cert"], "tls_ca_cert", {}),
        (
            ["--tls-verify-server-cert"],
            "tls_verify_server_cert",
            {"is_flag": True, "flag_value": True, "default": None},
        ),
        (
            ["--no-tls-verify-server-cert"],
            "no_tls_verify_server_cert",
            {"is_flag": True, "flag_value": True, "default": None},
        ),
        (["-t", "--timeout"], "timeout", {}),
        (["--local"], "local", {"is_flag": True, "flag_value": True, "default": None}),
    ]
    out = []
    for decls, name, extra in specs:
        decls = [d for d in decls if d not in taken]
        if not decls:
            continue
        callback = _no_verify_after_verb if name.startswith("no_") else _global_after_verb
        out.append(
            click.Option(
                [*decls, "after_" + name],
                hidden=True,
                expose_value=False,
                callback=callback,
                **extra,
            )
        )
    return out


def _no_verify_after_verb(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    if value:
        root = ctx.find_root()
        current = root.obj if isinstance(root.obj, ClientSettings) else ClientSettings()
        root.obj = dataclasses.replace(current, tls_verify_server_cert=False)


def settings_from(options: dict[str, Any]) -> ClientSettings:
    timeout = options.pop("timeout", "10000")
    json_output = options.pop("json_output", False)
    return ClientSettings(**options, timeout=_timeout(timeout), json=bool(json_output))


# --- HTTP ----------------------------------------------------------------------------------------


class ClientError(click.ClickException):
    """One line on stderr, exit 1 (click shows it; see core/errors.py for why it is click's).
    ``problems``: each problem of a 422 answer, for callers that list them one a line."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or []

    def show(self, file: Any = None) -> None:
        click.echo(f"quiesce: {self.format_message()}", err=True)


@dataclass
class Response:
    """One answer: status and body (the client reads every answer whole, except streams)."""

    status_code: int
    content: bytes

    def json(self) -> Any:
        return json.loads(self.content)

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")


class Api:
    """The admin API over the standard library's ``http.client``: one keep-alive connection,
    the next ``--hosts`` entry tried when one cannot be reached. (httpx, used before, cost
    0.1-0.2 s of start-up per command in imports and a CA bundle read; a verb makes one or two
    requests, so the CLI uses the standard library. See BENCHMARKS.md, CLI start-up.)"""

    def __init__(self, settings: ClientSettings) -> None:
        self.settings = settings
        scheme = "https" if settings.secure else "http"
        self.bases: list[str] = []
        for host in settings.hosts.split(","):
            host = host.strip()
            if host:
                self.bases.append(host if "://" in host else f"{scheme}://{host}")
        if not self.bases:
            raise ClientError("--hosts is empty")
        self._tls: ssl.SSLContext | None = None
        if any(b.startswith("https://") for b in self.bases):
            import ssl  # here, not at the top: verbs over plain HTTP start without it

            ctx = ssl.create_default_context(cafile=settings.tls_ca_cert)
            if not settings.tls_verify_server_cert:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            if settings.tls_cert:
                try:
                    ctx.load_cert_chain(settings.tls_cert, settings.tls_key)
                except (OSError, ssl.SSLError) as exc:
                    raise ClientError(f"cannot load --tls-cert/--tls-key: {exc}") from None
            self._tls = ctx
        self.headers = {"X-Quiesce-Client": "cli", "Accept": "application/json"}
        if settings.token:
            self.headers["Authorization"] = f"Bearer {settings.token}"
        elif settings.user is not None:
            pair = f"{settings.user}:{settings.password or ''}".encode()
            self.headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
        self.base = self.bases[0]
        # Imported here, not at the top: it imports ssl, which `quiesce --help` needs not.
        import http.client

        self._http = http.client
        self._conn: http.client.HTTPConnection | None = None
        self._conn_base = ""

    def _connection(self, base: str, timeout: float | None) -> http.client.HTTPConnection:
        if self._conn is not None and self._conn_base == base:
            self._conn.timeout = timeout
            if self._conn.sock is not None:
                self._conn.sock.settimeout(timeout)
            return self._conn
        self.close()
        url = urllib.parse.urlsplit(base)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ClientError(f"bad --hosts entry {base!r}: expected HOST:PORT or a URL")
        if url.scheme == "https":
            conn: http.client.HTTPConnection = self._http.HTTPSConnection(
                url.hostname, url.port, timeout=timeout, context=self._tls
            )
        else:
            conn = self._http.HTTPConnection(url.hostname, url.port, timeout=timeout)
        self._conn, self._conn_base = conn, base
        return conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _send(
        self,
        base: str,
        method: str,
        path: str,
        params: dict[str, Any] | None,
        body: bytes | None,
        timeout: float | None,
    ) -> http.client.HTTPResponse:
        target = path + ("?" + urllib.parse.urlencode(params) if params else "")
        headers = dict(self.headers)
        if body is not None:
            headers["Content-Type"] = "application/json"
        for attempt in (0, 1):
            conn = self._connection(base, timeout)
            try:
                conn.request(method, target, body=body, headers=headers)
                return conn.getresponse()
            except (self._http.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                # The server closed the kept-alive connection between two requests.
                self.close()
                if attempt:
                    raise
            except BaseException:
                self.close()
                raise
        raise AssertionError("unreachable")

    def request(
        self,
        method: str,
        path: str,
        params: dict[str, Any] | None = None,
        json_body: Any = None,
    ) -> Response:
        body = None if json_body is None else json.dumps(json_body).encode()
        if self.settings.local and method != "GET":
            params = {**(params or {}), "local": "true"}
        deadline = time.monotonic() + HANDOVER_WAIT
        while True:
            r = self._request_once(method, path, params, body)
            if not _handing_over(r) or time.monotonic() >= deadline:
                break
            # The process that answered is handing over to a new one (quiesce run
            # --takeover): the same request on a new connection reaches the new one. Or
            # a reload is being applied: the same request once it has ended.
            self.close()
            time.sleep(HANDOVER_RETRY)
        if r.status_code >= 400:
            raise ClientError(self._error_line(r), _problems(r))
        return r

    def _request_once(
        self, method: str, path: str, params: dict[str, Any] | None, body: bytes | None
    ) -> Response:
        last: Exception | None = None
        for base in [self.base, *(b for b in self.bases if b != self.base)]:
            try:
                resp = self._send(base, method, path, params, body, self.settings.timeout)
                r = Response(resp.status, resp.read())
            except (OSError, self._http.HTTPException) as exc:
                last = exc
                continue
            if resp.will_close:
                self.close()
            self.base = base
            return r
        raise ClientError(f"cannot reach {', '.join(self.bases)}: {_reason(last)}")

    def _error_line(self, r: Response) -> str:
        line = _error_line(r)
        if r.status_code == 401:
            s = self.settings
            if s.token:
                line += " (check --token / QUIESCE_TOKEN)"
            elif s.user is None:
                line += (
                    " (no credentials given: --user and --password, or QUIESCE_USER and "
                    "QUIESCE_PASSWORD; or --token / QUIESCE_TOKEN)"
                )
            else:
                line += (
                    f" (user {s.user!r}: check --user/--password, QUIESCE_USER/QUIESCE_PASSWORD)"
                )
        return line

    def get(self, path: str, **params: Any) -> Any:
        clean = {k: v for k, v in params.items() if v is not None}
        return self.request("GET", path, params=clean).json()

    def send(self, method: str, path: str, body: Any = None) -> Any:
        r = self.request(method, path, json_body=body)
        return r.json() if r.content else None

    def stream_lines(self, path: str, params: dict[str, Any]) -> Iterator[str]:
        """The lines of a streamed answer (Server-Sent Events), with no read timeout."""
        try:
            resp = self._send(self.base, "GET", path, params, None, self.settings.timeout)
            if resp.status >= 400:
                raise ClientError(self._error_line(Response(resp.status, resp.read())))
            if self._conn is not None and self._conn.sock is not None:
                self._conn.sock.settimeout(None)
            while True:
                line = resp.readline()
                if not line:
                    return
                yield line.decode("utf-8", "replace").rstrip("\r\n")
        except (OSError, self._http.HTTPException) as exc:
            raise ClientError(f"cannot reach {self.base}: {_reason(exc)}") from None
        finally:
            self.close()


def _handing_over(r: Response) -> bool:
    """A 503 of a quiesce that hands over to a new process, or that is applying a reload
    (a runtime change of a server refused, nothing changed): send the request again."""
    if r.status_code != 503:
        return False
    try:
        body = r.json()
    except ValueError:
        return False
    return isinstance(body, dict) and body.get("error") in ("handing over", "reloading")


def _problems(r: Response) -> list[str]:
    try:
        problems = r.json().get("problems")
    except (ValueError, AttributeError):
        return []
    return [str(p) for p in problems] if isinstance(problems, list) else []


def _reason(exc: Exception | None) -> str:
    text = str(exc) if exc is not None else "no host"
    return text or type(exc).__name__


def _error_line(r: Response) -> str:
    try:
        data = r.json()
        detail = data.get("detail") or data.get("error")
        problems = data.get("problems")
        if isinstance(problems, list) and problems:
            detail = "; ".join(str(p) for p in problems)
    except (ValueError, AttributeError):
        detail = r.text.strip()[:200]
    return f"{r.status_code}: {detail}" if detail else f"HTTP {r.status_code}"


def settings(ctx: click.Context) -> ClientSettings:
    obj = ctx.find_root().obj
    if isinstance(obj, ClientSettings):
        return obj
    return ClientSettings()


def api_of(ctx: click.Context) -> Api:
    api = Api(settings(ctx))
    ctx.call_on_close(api.close)
    return api


__all__ = [
    "DEFAULT_HOSTS",
    "Api",
    "ClientError",
    "ClientSettings",
    "DurationType",
    "Response",
    "after_verb_options",
    "api_of",
    "client_options",
    "settings",
    "settings_from",
]
