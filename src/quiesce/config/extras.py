"""Optional libraries a config needs installed (pyproject.toml's extras): ``state.etcd``
needs the etcd client, ``pip install 'quiesce[etcd]'`` (aetcd and grpcio). Review 14 R10:
after README's ``pip install .`` a file with ``state.etcd`` was ``ok`` for ``quiesce check``
and ``quiesce run`` died with a 45-line traceback (No module named 'aetcd'); now both say it
as one problem of the file, naming the key and the command. Looked up without importing
(importlib.util.find_spec): a check of the file does not load gRPC."""

from __future__ import annotations

import importlib.util

from quiesce.config.models import Config

ETCD_MODULES = ("aetcd", "grpc")  # the etcd extra: aetcd (the client) and grpcio (its TLS)


def installed(module: str) -> bool:
    """Whether ``module`` can be imported (a module blocked in sys.modules counts as not)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # ValueError: sys.modules[module] is None (blocked)
        return False


def extra_problems(config: Config) -> list[str]:
    """One problem per optional library the file needs and this Python does not have."""
    if config.state.etcd is None:
        return []
    missing = [m for m in ETCD_MODULES if not installed(m)]
    if not missing:
        return []
    names = " and ".join("grpcio" if m == "grpc" else m for m in missing)
    return [
        f"state.etcd: the etcd client is not installed ({names} missing): "
        "pip install 'quiesce[etcd]' (docs/admin.md, Several nodes: etcd)"
    ]


__all__ = ["ETCD_MODULES", "extra_problems", "installed"]
