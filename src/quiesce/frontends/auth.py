"""Who is calling: HTTP Basic, bearer tokens and the dashboard session (docs/architecture.md).

Theory of operation
-------------------
Every request but the login route and the dashboard's static files resolves to a
:class:`Principal` (user or token name, role, and how it authenticated) or is refused:
401 without or with wrong credentials, 403 for a read-only principal on a write, 403 for a
session write without the CSRF header, 429 when this user name (or bearer tokens as a whole)
has failed too often from the source in the last minute (``admin.login_failures_per_minute``),
or when as many hash checks from the source are still running. There is no anonymous
principal.

Password and token hashes are scrypt (:mod:`quiesce.security`): deliberately slow, so they are
verified in a worker thread, and a successful (name, secret) pair is remembered by its SHA-256
so a client polling every 100 ms (``set server … --wait``) costs one hash, not ten a second.
Failed attempts are events (``login_failed``: actor, source address) and count towards the
limit of that (source, user name) pair (review F14): every local client shares 127.0.0.1, so
a per-source limit let anyone on the host lock every admin out with ten wrong passwords; now
wrong passwords for one name delay only that name from that source (bearer tokens count as
one name). Hash checks in flight are bounded per source as well (the CPU an attacker spraying
user names can take), refused with a 429 that lasts only while they run.

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
_FAILURES_MAX = 4096  # (source, name) pairs kept before the expired ones are swept
BEARER = "\0bearer"
"""The name bearer-token failures count under (no user name is given; not a valid Name)."""


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

    def __init__(self, status: int, error: str, detail: str, retry_after: int = 60) -> None:
        super().__init__(detail, status_hint=status)
        self.status = status
        self.error = error
        self.detail = detail
        self.retry_after = retry_after  # a 429's Retry-After (seconds)


@dataclass
class Authenticator:
    config: AdminConfig
    admin: AdminService
    sessions: dict[str, Session] = field(default_factory=dict)
    # failure times per (source, user name; BEARER for tokens), the last minute's
    _failures: dict[tuple[str, str], deque[float]] = field(default_factory=dict)
    _verified: dict[bytes, UserConfig | TokenConfig] = field(default_factory=dict)
    # hash checks in flight per (source, name) and per source
    _pending: dict[tuple[str, str] | str, int] = field(default_factory=dict)
    # set, then replaced, by each reconfigure(): a long request's cue to call still_valid()
    reconfigured: asyncio.Event = field(default_factory=asyncio.Event)

    # rate limit -----------------------------------------------------------------------------

    def _recent_failures(self, key: tuple[str, str], now: float) -> deque[float]:
        q = self._failures.setdefault(key, deque())
        while q and q[0] <= now - 60.0:
            q.popleft()
        return q

    def check_rate(self, source: str, name: str = BEARER) -> None:
        """429 when ``name`` (a user name; BEARER: tokens) failed the limit's number of
        times from ``source`` in the last minute, counting its checks in flight."""
        now = time.monotonic()
        key = (source, name)
        q = self._recent_failures(key, now)
        pending = self._pending.get(key, 0)
        if len(q) + pending >= self.config.login_failures_per_minute:
            retry = max(1, int(q[0] + 60.0 - now) + 1) if q else 60
            who = "bearer tokens" if name == BEARER else f"user {name[:64]!r}"
            raise AuthError(
                429,
                "too many failed logins",
                f"{len(q)} failed logins for {who} from {source} in the last minute; "
                f"retry in {retry}s (other users are not limited)",
                retry_after=retry,
            )
        if not q:
            self._failures.pop(key, None)
        if len(self._failures) > _FAILURES_MAX:  # many names: forget the expired ones
            for k in [k for k, v in self._failures.items() if not v or v[-1] <= now - 60.0]:
                del self._failures[k]

    def _check_in_flight(self, source: str) -> None:
        """The CPU bound: at most the limit's number of hash checks at once per source,
        whatever the names (a 429 that lasts only while they run)."""
        running = self._pending.get(source, 0)
        if running >= self.config.login_failures_per_minute:
            raise AuthError(
                429,
                "too many failed logins",
                f"{running} logins from {source} are being checked; retry in 1s",
                retry_after=1,
            )

    async def _verify(self, source: str, name: str, secret: str, hashed: str) -> bool:
        """``verify_password`` in a worker thread, counted as an attempt in flight for
        (``source``, ``name``) and for ``source`` while it runs, so parallel attempts cannot
        all pass :meth:`check_rate` before the first failure is recorded."""
        keys: tuple[tuple[str, str] | str, ...] = ((source, name), source)
        for k in keys:
            self._pending[k] = self._pending.get(k, 0) + 1
        try:
            return await asyncio.to_thread(verify_password, secret, hashed)
        finally:
            for k in keys:
                left = self._pending[k] - 1
                if left:
                    self._pending[k] = left
                else:
                    del self._pending[k]

    def _fail(self, source: str, name: str, actor: str, via: str, why: str) -> AuthError:
        self._recent_failures((source, name), time.monotonic()).append(time.monotonic())
        self.admin.login_failed(actor, cause=Cause.API, reason=why, source=source, via=via)
        return AuthError(401, "unauthorized", why)

    # credentials ------------------------------------------------------------------------------

    def _cache_key(self, kind: str, name: str, secret: str) -> bytes:
        return hashlib.sha256(f"{kind}\0{name}\0{secret}".encode()).digest()

    async def check_password(self, user: str, password: str, source: str) -> Principal:
        """Basic credentials or a dashboard login; raises AuthError. The failure limit is
        this user name's from ``source`` (first, so a remembered pair is no faster oracle)."""
        self.check_rate(source, user)
        key = self._cache_key("user", user, password)
        hit = self._verified.get(key)
        if hit is not None:
            return Principal(hit.name, hit.role, "basic", grant=hit)
        self._check_in_flight(source)
        entry = next((u for u in self.config.users if u.name == user), None)
        if entry is not None:
            ok = await self._verify(source, user, password, entry.password_hash)
            if ok:
                self._remember(key, entry)
                return Principal(entry.name, entry.role, "basic", grant=entry)
        elif self.config.users:
            # An unknown user costs one hash check too (against a configured hash, so at the
            # same cost), or the answer's speed would tell which user names exist.
            await self._verify(source, user, password, self.config.users[0].password_hash)
        why = f"wrong user name or password for {user!r}"
        raise self._fail(source, user, user, "basic", why)

    async def check_token(self, token: str, source: str) -> Principal:
        self.check_rate(source, BEARER)
        key = self._cache_key("token", "", token)
        hit = self._verified.get(key)
        if hit is not None:
            return Principal(hit.name, hit.role, "bearer", grant=hit)
        self._check_in_flight(source)
        for entry in self.config.tokens:
            if await self._verify(source, BEARER, token, entry.token_hash):
                self._remember(key, entry)
                return Principal(entry.name, entry.role, "bearer", grant=entry)
        raise self._fail(source, BEARER, "", "bearer", "unknown bearer token")

    def _remember(self, key: bytes, value: UserConfig | TokenConfig) -> None:
        if len(self._verified) >= _CACHE_MAX:
            self._verified.pop(next(iter(self._verified)))
        self._verified[key] = value

    # reload -----------------------------------------------------------------------------------

    def reconfigure(self, config: AdminConfig) -> None:
        """A reload's users, tokens and login limit: remembered credentials of a user or
        token removed or changed (hash, role) are forgotten, the others kept (a reload must
        not cost the next request of every client a hash check: ~50 ms of a core each, in
        the middle of a reload, issue 14), sessions of a user removed or changed end, and
        every long request waiting on :attr:`reconfigured` wakes to re-check
        :meth:`still_valid`."""
        old = {u.name: u for u in self.config.users}
        self.config = config
        self._verified = _still_verified(self._verified, config)
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


def _still_verified(
    verified: dict[bytes, UserConfig | TokenConfig], config: AdminConfig
) -> dict[bytes, UserConfig | TokenConfig]:
    """The remembered credentials whose user or token ``config`` still has unchanged (same
    name, hash and role), each mapped to its entry in ``config``."""
    users = {u.name: u for u in config.users}
    tokens = {t.name: t for t in config.tokens}
    kept: dict[bytes, UserConfig | TokenConfig] = {}
    for key, entry in verified.items():
        now = (users if isinstance(entry, UserConfig) else tokens).get(entry.name)
        if now is not None and now == entry:
            kept[key] = now
    return kept


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
