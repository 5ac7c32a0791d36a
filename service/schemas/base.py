"""The base of every request schema: unknown fields are refused (a typo must not pass silently)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")
