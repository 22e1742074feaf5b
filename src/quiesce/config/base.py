"""What every configuration model shares: the frozen, unknown-keys-forbidden base and the
name type of pools, servers, services and monitors."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

Name = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:\-]+$")]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
