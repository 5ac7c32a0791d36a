"""Schemas of /v1/adapters."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class AdapterLoadRequest(BaseModel):
    """Load (or hot-swap) an adapter file from the server's adapter directory."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(..., min_length=1, max_length=64, description="name requests use in `adapter`")
    path: str = Field(..., min_length=1, max_length=1024, description="file path relative to the adapter directory")
    model: str | None = Field(None, description="served model; default: the first served model")


class AdapterOut(BaseModel):
    name: str
    model: str
    id: str
    method: str
    sigma: float
    alpha: float
    source: str
