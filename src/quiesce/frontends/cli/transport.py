"""How the CLI client reaches the REST API: the global options (maxctrl's ``--hosts``,
``--user``, ``--password``, ``--secure``, ``--tls-*``, ``--timeout``, each also read from a
``QUIESCE_*`` environment variable), the settings they make, and :class:`Api`, one httpx client
over them with one-line errors (:class:`ClientError`). Shared by the verbs (``client``) and the
monitor sub-shell (``configure``); imports nothing else of the CLI."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import click

from quiesce.config.durations import parse_duration
from quiesce.core.errors import QuiesceError

if TYPE_CHECKING:
    import httpx

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_HOSTS = "127.0.0.1:9900"


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
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def settings_from(options: dict[str, Any]) -> ClientSettings:
    timeout = options.pop("timeout", "10000")
    json_output = options.pop("json_output", False)
    return ClientSettings(**options, timeout=_timeout(timeout), json=bool(json_output))


# --- HTTP ----------------------------------------------------------------------------------------


class ClientError(click.ClickException, QuiesceError):
    """One line on stderr, exit 1 (click shows it; it is in quiesce's error tree too)."""

    def show(self, file: Any = None) -> None:
        click.echo(f"quiesce: {self.format_message()}", err=True)


class Api:
    def __init__(self, settings: ClientSettings) -> None:
        import httpx

        self.settings = settings
        scheme = "https" if settings.secure else "http"
        self.bases = []
        for host in settings.hosts.split(","):
            host = host.strip()
            if host:
                self.bases.append(host if "://" in host else f"{scheme}://{host}")
        if not self.bases:
            raise ClientError("--hosts is empty")
        import ssl  # here, not at the top: verbs over plain HTTP start without it

        verify: ssl.SSLContext | bool = True
        if any(b.startswith("https://") for b in self.bases):
            ctx = ssl.create_default_context(cafile=settings.tls_ca_cert)
            if not settings.tls_verify_server_cert:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            if settings.tls_cert:
                try:
                    ctx.load_cert_chain(settings.tls_cert, settings.tls_key)
                except (OSError, ssl.SSLError) as exc:
                    raise ClientError(f"cannot load --tls-cert/--tls-key: {exc}") from None
            verify = ctx
        auth: Any = None
        headers = {"X-Quiesce-Client": "cli", "Accept": "application/json"}
        if settings.token:
            headers["Authorization"] = f"Bearer {settings.token}"
        elif settings.user is not None:
            auth = httpx.BasicAuth(settings.user, settings.password or "")
        self.client = httpx.Client(
            auth=auth, headers=headers, verify=verify, timeout=settings.timeout
        )
        self.base = self.bases[0]

    def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        import httpx

        last: Exception | None = None
        for base in [self.base, *(b for b in self.bases if b != self.base)]:
            try:
                r = self.client.request(method, base + path, **kw)
            except httpx.TransportError as exc:
                last = exc
                continue
            self.base = base
            if r.status_code >= 400:
                raise ClientError(_error_line(r))
            return r
        raise ClientError(f"cannot reach {', '.join(self.bases)}: {_reason(last)}")

    def get(self, path: str, **params: Any) -> Any:
        clean = {k: v for k, v in params.items() if v is not None}
        return self.request("GET", path, params=clean).json()

    def send(self, method: str, path: str, body: Any = None) -> Any:
        r = self.request(method, path, json=body)
        return r.json() if r.content else None

    def stream_lines(self, path: str, params: dict[str, Any]) -> Iterator[str]:
        import httpx

        timeout = httpx.Timeout(self.settings.timeout, read=None)
        try:
            with self.client.stream("GET", self.base + path, params=params, timeout=timeout) as r:
                if r.status_code >= 400:
                    r.read()
                    raise ClientError(_error_line(r))
                yield from r.iter_lines()
        except httpx.TransportError as exc:
            raise ClientError(f"cannot reach {self.base}: {_reason(exc)}") from None


def _reason(exc: Exception | None) -> str:
    text = str(exc) if exc is not None else "no host"
    return text or type(exc).__name__


def _error_line(r: httpx.Response) -> str:
    try:
        data = r.json()
        detail = data.get("detail") or data.get("error")
    except ValueError:
        detail = r.text.strip()[:200]
    return f"{r.status_code}: {detail}" if detail else f"HTTP {r.status_code}"


def settings(ctx: click.Context) -> ClientSettings:
    obj = ctx.find_root().obj
    if isinstance(obj, ClientSettings):
        return obj
    return ClientSettings()


def api_of(ctx: click.Context) -> Api:
    api = Api(settings(ctx))
    ctx.call_on_close(api.client.close)
    return api


__all__ = [
    "DEFAULT_HOSTS",
    "Api",
    "ClientError",
    "ClientSettings",
    "api_of",
    "client_options",
    "settings",
    "settings_from",
]
