"""Load and validate a config file, listing every problem at once with its path."""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from quiesce.config.base import KeyProblem, Model
from quiesce.config.extras import extra_problems
from quiesce.config.logs import logging_problems
from quiesce.config.models import Config
from quiesce.config.tls import tls_problems, tls_warnings
from quiesce.core.errors import QuiesceError


class ConfigError(QuiesceError):
    """A config that cannot be used; ``problems`` holds one ``path: message`` per problem."""

    status_hint = 422

    def __init__(self, problems: list[str], source: str = "config") -> None:
        self.problems = problems
        self.source = source
        super().__init__(f"{source}: {len(problems)} problem(s)\n" + "\n".join(problems))


def format_loc(loc: Iterable[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top)"


def _clean(msg: str) -> str:
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            return msg[len(prefix) :]
    return msg


# Pydantic reports a failing member of a union or a tagged shortcut under an extra loc element
# naming the type it tried ("str", "FlagCondition", "function-before[...]"). Users never typed
# those, so they are dropped from paths. Model names are listed rather than guessed from an
# upper-case first letter, which would also drop a user's key such as a pool named "Web".
def _model_names() -> frozenset[str]:
    out: set[str] = set()
    stack: list[type[Model]] = [Model]
    while stack:
        for sub in stack.pop().__subclasses__():
            out.add(sub.__name__)
            stack.append(sub)
    return frozenset(out)


_TYPE_TAGS = _model_names() | {"str", "int", "bool", "float", "constrained-str", "constrained-int"}


def _user_loc(loc: tuple[int | str, ...]) -> list[int | str]:
    out: list[int | str] = []
    for part in loc:
        if isinstance(part, str) and (
            part in _TYPE_TAGS or "[" in part or part.startswith(("function-", "literal["))
        ):
            continue
        out.append(part)
    return out


def validation_problems(exc: ValidationError, prefix: Iterable[int | str] = ()) -> list[str]:
    seen: set[str] = set()
    problems = []
    for err in exc.errors():
        loc = [*prefix, *_user_loc(tuple(err["loc"]))]
        cause = err.get("ctx", {}).get("error")
        if err["type"] == "extra_forbidden":
            line = f"{format_loc(loc)}: unknown key"
        elif isinstance(cause, KeyProblem):
            line = f"{format_loc([*loc, *cause.loc])}: {cause.message}"
        else:
            line = f"{format_loc(loc)}: {_clean(err['msg'])}"
        if line not in seen:
            seen.add(line)
            problems.append(line)
    return problems


def cross_reference_errors(raw: Mapping[str, Any]) -> list[str]:
    """References between sections, checked on the raw mapping so they are reported even when
    other parts of the file are invalid."""
    problems: list[str] = []

    def names(section: str) -> set[str]:
        value = raw.get(section)
        return set(value) if isinstance(value, Mapping) else set()

    monitors, pools, pages = names("healthmonitors"), names("pools"), names("pages")
    raw_pools = raw.get("pools") if isinstance(raw.get("pools"), Mapping) else {}
    assert isinstance(raw_pools, Mapping)
    for pname, pool in raw_pools.items():
        if not isinstance(pool, Mapping):
            continue
        for i, m in enumerate(_list(pool.get("healthmonitors"))):
            if isinstance(m, str) and m not in monitors:
                problems.append(f"pools.{pname}.healthmonitors[{i}]: no health monitor named {m!r}")
            elif isinstance(m, str) and _grpc_without_verify(raw, m, pool):
                problems.append(
                    f"pools.{pname}.healthmonitors[{i}]: grpc monitor {m!r} uses the pool's tls "
                    "(use_pool_tls), whose verify: false a grpc monitor cannot do (grpcio "
                    f"always verifies): give pools.{pname}.tls a ca"
                )
        seen: set[Any] = set()
        for si, server in enumerate(_list(pool.get("servers"))):
            if isinstance(server, Mapping):
                name = server.get("name")
                if not isinstance(name, Hashable):
                    pass  # a list or a mapping: not a name (validation says so), no TypeError
                elif name in seen:
                    problems.append(
                        f"pools.{pname}.servers[{si}].name: duplicate server name "
                        f"{name!r} in pool {pname!r}"
                    )
                else:
                    seen.add(name)
                for i, m in enumerate(_list(server.get("healthmonitors"))):
                    if isinstance(m, str) and m not in monitors:
                        problems.append(
                            f"pools.{pname}.servers[{si}].healthmonitors[{i}]: "
                            f"no health monitor named {m!r}"
                        )
    raw_services = raw.get("services") if isinstance(raw.get("services"), Mapping) else {}
    assert isinstance(raw_services, Mapping)
    for sname, svc in raw_services.items():
        if not isinstance(svc, Mapping):
            continue
        base = f"services.{sname}"
        for key in ("pool", "fallback_pool"):
            ref = svc.get(key)
            if isinstance(ref, str) and ref not in pools:
                problems.append(f"{base}.{key}: no pool named {ref!r}")
            elif (
                svc.get("protocol") in ("tcp", "postgresql", "mysql")
                and isinstance(ref, str)
                and isinstance(raw_pools.get(ref), Mapping)
                and raw_pools[ref].get("protocol") == "h2"
            ):
                problems.append(
                    f"{base}.{key}: pool {ref!r} has protocol: h2 (pools.{ref}.protocol), "
                    f"which a {svc.get('protocol')} service cannot use (h2 is for http services)"
                )
        monitor_uri = svc.get("monitor_uri")
        if isinstance(monitor_uri, Mapping) and isinstance(monitor_uri.get("fail_if"), Mapping):
            problems += _pool_counts(
                monitor_uri["fail_if"].get("usable_servers_below"),
                pools,
                f"{base}.monitor_uri.fail_if.usable_servers_below",
            )
        for ri, rule in enumerate(_list(svc.get("rules"))):
            if not isinstance(rule, Mapping):
                continue
            rbase = f"{base}.rules[{ri}]"
            problems += _condition_refs(rule.get("if"), pools, f"{rbase}.if")
            then = rule.get("then")
            if isinstance(then, Mapping):
                ref = then.get("pool")
                if isinstance(ref, str) and ref not in pools:
                    problems.append(f"{rbase}.then.pool: no pool named {ref!r}")
                page = then.get("maintenance_page")
                if isinstance(page, str) and page not in pages:
                    problems.append(f"{rbase}.then.maintenance_page: no page named {page!r}")
    return problems


def _grpc_without_verify(raw: Mapping[str, Any], name: str, pool: Mapping[str, Any]) -> bool:
    """Monitor ``name`` is a grpc monitor with ``tls.use_pool_tls`` and ``pool``'s tls has
    ``verify: false`` (quiesce.health.probes.grpc)."""
    monitor = (raw.get("healthmonitors") or {}).get(name)
    tls = pool.get("tls")
    if not isinstance(monitor, Mapping) or not isinstance(tls, Mapping):
        return False
    settings = monitor.get("grpc_monitor")
    own = settings.get("tls") if isinstance(settings, Mapping) else None
    return (
        monitor.get("type") == "grpc"
        and isinstance(own, Mapping)
        and own.get("use_pool_tls") is True
        and tls.get("verify") is False
    )


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _pool_counts(value: Any, pools: set[str], path: str) -> list[str]:
    if not isinstance(value, Mapping):
        return []
    return [f"{path}.{p}: no pool named {p!r}" for p in value if p not in pools]


def _condition_refs(cond: Any, pools: set[str], path: str) -> list[str]:
    if not isinstance(cond, Mapping):
        return []
    problems = _pool_counts(cond.get("usable_servers_below"), pools, f"{path}.usable_servers_below")
    for key in ("all", "any"):
        for i, sub in enumerate(_list(cond.get(key))):
            problems += _condition_refs(sub, pools, f"{path}.{key}[{i}]")
    problems += _condition_refs(cond.get("not"), pools, f"{path}.not")
    return problems


def parse_config(raw: Any, source: str = "config") -> Config:
    """Validate an already-parsed mapping. Raises ConfigError listing every problem."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError([f"(top): expected a mapping, got {type(raw).__name__}"], source)
    problems: list[str] = []
    config: Config | None = None
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        problems += validation_problems(exc)
    problems += cross_reference_errors(raw)
    if problems or config is None:
        raise ConfigError(problems, source)
    return config


# libyaml's parser when PyYAML has it (4x faster: a file of 10,000 servers parses in about
# half a second instead of two, which a live reload of a big file notices); the same safe
# constructor either way.
_SafeLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _UniqueKeyLoader(_SafeLoader):  # type: ignore[misc]
    """YAML's SafeLoader, refusing a key given twice in one mapping (the last would win
    silently)."""


def _construct_mapping(loader: Any, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if not isinstance(key, Hashable):  # a mapping or list as a key: YAML's own message
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping",
                node.start_mark,
                "found unhashable key",
                key_node.start_mark,
            )
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    mapping: dict[Any, Any] = loader.construct_mapping(node)
    return mapping


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


def semantic_problems(config: Config, base_dir: Path | None) -> list[str]:
    """What a valid-looking config still gets wrong: files that are not there, two listeners
    on one address, hashes that no password can match, guards no pool can satisfy."""
    from quiesce.config.addresses import split_address

    problems: list[str] = []
    if base_dir is not None:
        pages = [
            (f"services.{n}.maintenance_page", s.maintenance_page)
            for n, s in config.services.items()
        ]
        pages += [(f"pages.{n}", p) for n, p in config.pages.items()]
        for path, page in pages:
            if page.file is not None and not (base_dir / page.file).is_file():
                problems.append(f"{path}.file: no such file {str(base_dir / page.file)!r}")
    listeners: dict[tuple[str, int], str] = {}
    named = [(f"services.{n}.listen", s.listen) for n, s in config.services.items()]
    named.append(("admin.listen", config.admin.listen))
    if config.admin.runtime_tcp:
        named.append(("admin.runtime_tcp", config.admin.runtime_tcp))
    for path, address in named:
        host, port = split_address(address)
        if port == 0:
            continue
        key = (host, port)
        if key in listeners:
            problems.append(f"{path}: {address} is already the address of {listeners[key]}")
        else:
            listeners[key] = path
    if base_dir is not None:
        problems += tls_problems(config, base_dir)
        problems += logging_problems(config.logging, base_dir)
        problems += extra_problems(config)  # state.etcd without the etcd extra (review 14 R10)
    for name, pool in config.pools.items():
        if pool.min_servers_up > len(pool.servers):
            problems.append(
                f"pools.{name}.min_servers_up: {pool.min_servers_up} is more than the "
                f"{len(pool.servers)} server(s) of the pool"
            )
    return problems


def config_warnings(config: Config, base_dir: Path | None = None) -> list[str]:
    """Not wrong enough to refuse the file, but worth saying (``quiesce check`` and
    ``quiesce run`` print them): a hash no password can match locks that user out; a
    listener's certificate has expired or soon will (``base_dir``: where its files are); a
    mysql service without tls drains a TLS client's session at connection level; a
    postgresql service without tls refuses TLS (answers an SSLRequest 'N')."""
    warnings: list[str] = [] if base_dir is None else tls_warnings(config, base_dir)
    for i, user in enumerate(config.admin.users):
        if not _looks_like_hash(user.password_hash):
            warnings.append(
                f"admin.users[{i}].password_hash: not a hash printed by 'quiesce passwd': "
                f"user {user.name!r} cannot log in"
            )
    for i, token in enumerate(config.admin.tokens):
        if not _looks_like_hash(token.token_hash):
            warnings.append(
                f"admin.tokens[{i}].token_hash: not a hash printed by 'quiesce passwd': "
                f"token {token.name!r} cannot be used"
            )
    for name, svc in config.services.items():
        if svc.protocol == "postgresql" and svc.tls is None:
            warnings.append(
                f"services.{name}: a postgresql service without tls answers a client's "
                "SSLRequest 'N': sslmode=prefer goes on in cleartext, require or stricter "
                "cannot connect; give the service tls to terminate it (docs/database.md)"
            )
        if svc.protocol == "mysql" and svc.tls is None:
            warnings.append(
                f"services.{name}: a mysql service without tls does not terminate TLS: a "
                "client that asks for it (CLIENT_SSL) is relayed opaque and drained at "
                "connection level, not at the transaction boundary; give the service tls to "
                "terminate it (docs/database.md)"
            )
    # the unauthenticated TCP runtime socket at level admin: any local user changes servers
    if config.admin.runtime_tcp and config.admin.runtime_tcp_level == "admin":
        warnings.append(
            f"admin.runtime_tcp_level: admin on {config.admin.runtime_tcp}, which has no "
            "authentication: any user of this host can add, re-address and delete servers "
            "and reload there (redirect a pool's traffic to a port of theirs); give 'user' "
            "or 'operator' and keep the changes on the Unix runtime_socket (docs/cli.md)"
        )
    return warnings


def _looks_like_hash(stored: str) -> bool:
    parts = stored.split("$")
    return len(parts) == 6 and parts[0] == "scrypt" and all(p.isdigit() for p in parts[1:4])


def load_text(text: str, source: str = "config", base_dir: Path | None = None) -> Config:
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
        raise ConfigError([f"(yaml) {where}: {getattr(exc, 'problem', exc)}"], source) from None
    if raw is None or raw == {}:
        # An empty or truncated file (`: > q.yaml`, a failed copy) would pass as a config of
        # nothing, and a reload of it would remove every service, pool and admin user. As
        # HAProxy refuses a file with no proxy, refuse it (`parse_config` still takes None
        # from callers that build a config in code).
        raise ConfigError(["(top): the file is empty: nothing to serve"], source)
    config = parse_config(raw, source)
    problems = semantic_problems(config, base_dir)
    if problems:
        raise ConfigError(problems, source)
    return config


def read_config_file(p: Path) -> str:
    """The text of a config file, or a ConfigError of one problem: it cannot be read, or it
    is not UTF-8 (a Latin-1 comment, a half-written copy), at which byte, line and column;
    ``check``, every reload route and start-up then report it as any other problem."""
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise ConfigError([f"(file): cannot read {p}: {exc.strerror}"], str(p)) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ConfigError(
            [
                f"(file): {p} is not UTF-8 at byte {exc.start} (line {line}, column {column}: "
                f"{data[exc.start : exc.start + 1]!r}): save it as UTF-8"
            ],
            str(p),
        ) from None


def load_config(path: str | Path) -> Config:
    p = Path(path)
    return load_text(read_config_file(p), str(p), p.resolve().parent)
