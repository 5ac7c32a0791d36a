"""Schemas of /v1/adapters."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from service.schemas.base import Strict

# a path the adapter directory can hold: no control characters (a NUL byte never reaches the filesystem)
PATH_PATTERN = r"^[^\x00-\x1f\x7f]+$"


class AdapterLoadRequest(Strict):
    """Load (or hot-swap) an adapter file from the server's adapter directory."""

    name: str = Field(..., min_length=1, max_length=64, description="name requests use in `adapter`")
    path: str = Field(..., min_length=1, max_length=1024, pattern=PATH_PATTERN,
                      description="file path relative to the adapter directory")
    model: str | None = Field(None, max_length=256, description="served model; default: the first served model")


class AdapterOut(BaseModel):
    """One loaded adapter, as /v1/adapters lists it (``id`` changes with every load or swap)."""

    model_config = ConfigDict(frozen=True)
    name: str
    model: str
    id: str
    method: str
    sigma: float
    alpha: float
    source: str
