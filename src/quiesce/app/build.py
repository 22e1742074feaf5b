"""The code this process runs: ``quiesce.__version__`` and a digest of the package's
``.py`` and ``.so`` files (names and contents) as they were when this module was first
imported, which ``quiesce run`` does at start (quiesce.app.core -> reload -> reload_worker).

The reload worker (quiesce.app.reload_worker) is a separate process started at the first
reload and importing quiesce from disk then: after a package upgrade it would validate a file
with the new code while the serving process applies it with the old (review F13: a config
the old code refuses was accepted, and a listener broken). So a reload passes the serving
process's :data:`BUILD`, and the worker refuses to validate (:func:`skew_problem`) unless its
own code, and the files on disk now, are the same: the upgrade is ``quiesce run
--takeover`` (docs/upgrade.md). The digest reads ~2.4 MB once (~8 ms). Only an installed
package is checked (:data:`CHECKED`).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import quiesce

PACKAGE = Path(quiesce.__file__).resolve().parent


def code_digest(root: Path = PACKAGE) -> str:
    """The first 12 hex digits of a SHA-256 over the relative path and the content of each
    ``.py`` and ``.so`` file under ``root`` (``__pycache__`` left out), in sorted order."""
    files: list[str] = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        files += [os.path.join(folder, n) for n in names if n.endswith((".py", ".so"))]
    h = hashlib.sha256()
    for path in sorted(files):
        h.update(os.path.relpath(path, root).encode() + b"\0")
        try:
            with open(path, "rb") as f:
                h.update(f.read())
        except OSError:  # removed while we walked: its absence is the difference
            h.update(b"\0missing")
        h.update(b"\0")
    return h.hexdigest()[:12]


BUILD: tuple[str, str] = (quiesce.__version__, code_digest())
"""(version, digest) of the code this process imported."""

CHECKED = PACKAGE.parent.name in ("site-packages", "dist-packages")
"""Whether :func:`skew_problem` applies: to an installed package (pip, apt, a venv), which
changes only by an upgrade; not to a source checkout run from ``src`` or an editable install,
whose files change under a developer (and a test session) by design."""


def _name(build: tuple[str, str]) -> str:
    return f"{build[0]}+{build[1]}"


def skew_problem(
    parent: tuple[str, str],
    *,
    mine: tuple[str, str] | None = None,
    root: Path = PACKAGE,
    checked: bool | None = None,
) -> str | None:
    """In the reload worker: None if the serving process's ``parent`` build is this
    process's (``mine``, default :data:`BUILD`) and the files under ``root`` now (nothing
    upgraded since it started), or if not ``checked`` (default :data:`CHECKED`); else the
    reload's one problem."""
    if not (CHECKED if checked is None else checked):
        return None
    mine = BUILD if mine is None else mine
    now = (mine[0], code_digest(root))
    theirs = mine if tuple(parent) != mine else now
    if tuple(parent) == mine == now:
        return None
    return (
        f"(quiesce): quiesce on disk changed since this process started ({_name(parent)} -> "
        f"{_name(theirs)}): this process cannot validate a file with code it does not run; "
        "use quiesce run --takeover to upgrade (docs/upgrade.md)"
    )


__all__ = ["BUILD", "CHECKED", "PACKAGE", "code_digest", "skew_problem"]
