"""Schema of POST /playground/api/attack (the playground page's attack)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from service.schemas.base import Strict

Text = Annotated[str, Field(min_length=1)]


class AttackRequest(Strict):
    model: str | None = Field(None, description="served CLIP model; default: the first that classifies")
    image: str = Field(..., min_length=1, description="base64 bytes or a data URI (an http(s) URL when enabled)")
    labels: list[Text] = Field(..., min_length=2, description="candidate labels (at least two)")
    template: str | None = Field(None, description="prompt with {} for the label; default 'a photo of a {}.'")
    eps: int = Field(8, ge=1, description="L-inf budget in 1/255 (at most the server's attack_max_eps)")
    steps: int = Field(10, ge=1, description="PGD steps (at most the server's attack_max_steps)")
    target: Literal["standard", "robust"] = Field(
        "standard", description="the mode the attack differentiates: standard (the attacked image is then "
        "shown to robust mode) or robust (an adaptive attack through R-Adapt)")
    adapter: str | None = Field(None, description="robust mode's adapter; default: 'default'")
