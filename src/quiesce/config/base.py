"""What every configuration model shares: the frozen, unknown-keys-forbidden base and the
name type of pools, servers, services and monitors."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

Name = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:\-]+$")]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KeyProblem(ValueError):
    """A model validator's complaint about one of its keys (``loc``: the key's path under the
    model, such as ``("tls", "alpn")``): the loader reports it at ``pools.X.tls.alpn``, where
    pydantic would put a model validator's error on the model itself."""

    def __init__(self, loc: tuple[str | int, ...], message: str) -> None:
        self.loc = loc
        self.message = message
        path = "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in loc).lstrip(".")
        super().__init__(f"{path}: {message}")
