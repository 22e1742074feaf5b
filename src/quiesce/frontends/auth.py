"""Who is calling: HTTP Basic, bearer tokens and the dashboard session (docs/architecture.md).

Theory of operation
-------------------
Every request but the login route and the dashboard's static files resolves to a
:class:`Principal` (user or token name, role, and how it authenticated) or is refused:
401 without or with wrong credentials, 403 for a read-only principal on a write, 403 for a
session write without the CSRF header, 429 when the source has failed too often in the last
minute (``admin.login_failures_per_minute``). There is no anonymous principal.

Password and token hashes are scrypt (:mod:`quiesce.security`): deliberately slow, so they are
verified in a worker thread, and a successful (name, secret) pair is remembered by its SHA-256
so a client polling every 100 ms (``set server … --wait``) costs one hash, not ten a second.
Failed attempts are events (``login_failed``: actor, source address) and count towards the
per-source limit.

A reload hands the new users and tokens to :meth:`Authenticator.reconfigure`: remembered
credentials are forgotten, sessions of a user removed or changed end, and
:attr:`Authenticator.reconfigured` is set so a long request (the event stream) re-checks
:meth:`Authenticator.still_valid` at once and ends if its credentials no longer authenticate.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from quiesce.admin import AdminService
from quiesce.config.models import AdminConfig, TokenConfig, UserConfig
from quiesce.core.errors import QuiesceError
from quiesce.core.states import Cause
from quiesce.security import verify_password

Role = Literal["admin", "read_only"]
Via = Literal["basic", "bearer", "session"]

SESSION_COOKIE = "quiesce_session"
CSRF_COOKIE = "quiesce_csrf"
CSRF_HEADER = "X-CSRF-Token"
CLIENT_HEADER = "X-Quiesce-Client"  # "cli" marks the CLI client: events get cause "cli"
SESSION_LIFETIME = 12 * 3600.0
_CACHE_MAX = 256


@dataclass(frozen=True, slots=True)
class Principal:
    user: str
    role: Role
    via: Via
    csrf: str | None = None  # the session's CSRF token
    # the user or token entry that Basic/Bearer credentials matched (Authenticator.still_valid)
    grant: UserConfig | TokenConfig | None = field(default=None, compare=False, repr=False)

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


@dataclass(slots=True)
class Session:
    user: str
    role: Role
    csrf: str
    expires: float


class AuthError(QuiesceError):
    """Refused: ``status`` (the status hint) is 401, 403 or 429."""

    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(detail, status_hint=status)
        self.status = status
        self.error = error
        self.detail = detail


@dataclass
class Authenticator:
    config: AdminConfig
    admin: AdminService
    sessions: dict[str, Session] = field(default_factory=dict)
    _failures: dict[str, deque[float]] = field(default_factory=dict)
    _verified: dict[bytes, UserConfig | TokenConfig] = field(default_factory=dict)
    _pending: dict[str, int] = field(default_factory=dict)  # hash checks in flight per source
    # set, then replaced, by each reconfigure(): a long request's cue to call still_valid()
    reconfigured: asyncio.Event = field(default_factory=asyncio.Event)

    # rate limit -----------------------------------------------------------------------------

    def _recent_failures(self, source: str, now: float) -> deque[float]:
        q = self._failures.setdefault(source, deque())
        while q and q[0] <= now - 60.0:
            q.popleft()
        return q

    def check_rate(self, source: str) -> None:
        now = time.monotonic()
        q = self._recent_failures(source, now)
        pending = self._pending.get(source, 0)
        if len(q) + pending >= self.config.login_failures_per_minute:
            retry = max(1, int(q[0] + 60.0 - now) + 1) if q else 60
            raise AuthError(
                429,
                "too many failed logins",
                f"{len(q)} failed logins from {source} in the last minute; retry in {retry}s",
            )
        if not q:
            self._failures.pop(source, None)

    async def _verify(self, source: str, secret: str, hashed: str) -> bool:
        """``verify_password`` in a worker thread, counted as an attempt in flight from
        ``source`` while it runs, so parallel attempts cannot all pass :meth:`check_rate`
        before the first failure is recorded."""
        self._pending[source] = self._pending.get(source, 0) + 1
        try:
            return await asyncio.to_thread(verify_password, secret, hashed)
        finally:
            left = self._pending[source] - 1
            if left:
                self._pending[source] = left
            else:
                del self._pending[source]

    def _fail(self, source: str, actor: str, via: str, why: str) -> AuthError:
        self._recent_failures(source, time.monotonic()).append(time.monotonic())
        self.admin.login_failed(actor, cause=Cause.API, reason=why, source=source, via=via)
        return AuthError(401, "unauthorized", why)

    # credentials ------------------------------------------------------------------------------

    def _cache_key(self, kind: str, name: str, secret: str) -> bytes:
        return hashlib.sha256(f"{kind}\0{name}\0{secret}".encode()).digest()

    async def check_password(self, user: str, password: str, source: str) -> Principal:
        """Basic credentials or a dashboard login; raises AuthError."""
        self.check_rate(source)
        key = self._cache_key("user", user, password)
        hit = self._verified.get(key)
        if hit is not None:
            return Principal(hit.name, hit.role, "basic", grant=hit)
        entry = next((u for u in self.config.users if u.name == user), None)
        if entry is not None:
            ok = await self._verify(source, password, entry.password_hash)
            if ok:
                self._remember(key, entry)
                return Principal(entry.name, entry.role, "basic", grant=entry)
        elif self.config.users:
            # An unknown user costs one hash check too (against a configured hash, so at the
            # same cost), or the answer's speed would tell which user names exist.
            await self._verify(source, password, self.config.users[0].password_hash)
        raise self._fail(source, user, "basic", f"wrong user name or password for {user!r}")

    async def check_token(self, token: str, source: str) -> Principal:
        self.check_rate(source)
        key = self._cache_key("token", "", token)
        hit = self._verified.get(key)
        if hit is not None:
            return Principal(hit.name, hit.role, "bearer", grant=hit)
        for entry in self.config.tokens:
            if await self._verify(source, token, entry.token_hash):
                self._remember(key, entry)
                return Principal(entry.name, entry.role, "bearer", grant=entry)
        raise self._fail(source, "", "bearer", "unknown bearer token")

    def _remember(self, key: bytes, value: UserConfig | TokenConfig) -> None:
        if len(self._verified) >= _CACHE_MAX:
            self._verified.pop(next(iter(self._verified)))
        self._verified[key] = value

    # reload -----------------------------------------------------------------------------------

    def reconfigure(self, config: AdminConfig) -> None:
        """A reload's users, tokens and login limit: remembered credentials are forgotten,
        sessions of a user removed or changed (password, role) end, and every long request
        waiting on :attr:`reconfigured` wakes to re-check :meth:`still_valid`."""
        old = {u.name: u for u in self.config.users}
        self.config = config
        self._verified.clear()
        users = {u.name: u for u in config.users}
        for sid, session in list(self.sessions.items()):
            if session.user not in users or users[session.user] != old.get(session.user):
                del self.sessions[sid]
        woken, self.reconfigured = self.reconfigured, asyncio.Event()
        woken.set()

    def still_valid(self, principal: Principal, sid: str | None = None) -> bool:
        """Whether what authenticated ``principal`` still would: its session ``sid`` is
        open, or the user / token entry its Basic / Bearer credentials matched is still
        configured unchanged (same name, hash and role)."""
        if principal.via == "session":
            return sid is not None and self.session(sid) is not None
        entries: list[UserConfig] | list[TokenConfig]
        entries = self.config.users if principal.via == "basic" else self.config.tokens
        grant = principal.grant
        return grant is not None and any(e == grant for e in entries)

    # sessions ---------------------------------------------------------------------------------

    def open_session(self, principal: Principal) -> tuple[str, Session]:
        now = time.time()
        for sid in [s for s, v in self.sessions.items() if v.expires <= now]:
            del self.sessions[sid]
        sid = secrets.token_urlsafe(32)
        session = Session(
            principal.user, principal.role, secrets.token_urlsafe(24), now + SESSION_LIFETIME
        )
        self.sessions[sid] = session
        return sid, session

    def close_session(self, sid: str | None) -> None:
        if sid:
            self.sessions.pop(sid, None)

    def session(self, sid: str) -> Session | None:
        s = self.sessions.get(sid)
        if s is None or s.expires <= time.time():
            self.sessions.pop(sid, None)
            return None
        return s

    # one request ------------------------------------------------------------------------------

    async def authenticate(
        self,
        *,
        authorization: str | None,
        session_cookie: str | None,
        csrf_header: str | None,
        method: str,
        source: str,
    ) -> Principal:
        """The principal of one request, or AuthError. Explicit credentials win over a
        session cookie; a session write needs the CSRF header."""
        if authorization:
            scheme, _, value = authorization.strip().partition(" ")
            value = value.strip()
            if scheme.lower() == "basic":
                try:
                    decoded = base64.b64decode(value, validate=True).decode()
                except (binascii.Error, UnicodeDecodeError):
                    raise AuthError(401, "unauthorized", "malformed Basic credentials") from None
                user, sep, password = decoded.partition(":")
                if not sep:
                    raise AuthError(401, "unauthorized", "malformed Basic credentials")
                return await self.check_password(user, password, source)
            if scheme.lower() == "bearer" and value:
                return await self.check_token(value, source)
            raise AuthError(401, "unauthorized", f"unsupported authorization scheme {scheme!r}")
        if session_cookie:
            s = self.session(session_cookie)
            if s is None:
                raise AuthError(401, "unauthorized", "the session has expired: log in again")
            if method not in ("GET", "HEAD") and not (
                csrf_header and hmac.compare_digest(csrf_header, s.csrf)
            ):
                raise AuthError(403, "forbidden", f"missing or wrong {CSRF_HEADER} header")
            return Principal(s.user, s.role, "session", s.csrf)
        raise AuthError(401, "unauthorized", "authentication required (Basic or Bearer)")


def cause_of(principal: Principal, client: str | None) -> Cause:
    """The event cause of a request: the dashboard (session), the CLI client, or the API."""
    if principal.via == "session":
        return Cause.DASHBOARD
    if client and client.strip().lower() == "cli":
        return Cause.CLI
    return Cause.API


__all__ = [
    "CLIENT_HEADER",
    "CSRF_COOKIE",
    "CSRF_HEADER",
    "SESSION_COOKIE",
    "AuthError",
    "Authenticator",
    "Principal",
    "Role",
    "cause_of",
]
