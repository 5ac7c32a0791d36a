"""Schemas of /v1/chat/completions (OpenAI-compatible subset), /v1/caption and /v1/vqa.

Types and fixed bounds are checked here; values that depend on the server's settings (max_tokens,
text length, images per request) and the sampling rules (a temperature of 0 or at least 0.01, at
most 4 stop strings) are checked by the engine, which answers 400 with a code naming the field.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field

from service.engine.generation import SamplingRequest
from service.schemas.base import Strict


class ImageURL(Strict):
    url: str = Field(..., min_length=1, description="data URI (or http(s) URL when the server allows them)")
    detail: Literal["auto", "low", "high"] | None = None


class TextPart(Strict):
    type: Literal["text"]
    text: str


class ImagePart(Strict):
    type: Literal["image_url"]
    image_url: ImageURL


Part = Annotated[TextPart | ImagePart, Field(discriminator="type")]


class Message(Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[Part]
    name: str | None = None


class StreamOptions(Strict):
    include_usage: bool = False


class Sampled(Strict):
    max_tokens: int | None = Field(None, ge=1, description="new tokens at most (server default and limit apply)")
    temperature: float | None = Field(None, ge=0.0, le=2.0, description="0 or unset = greedy; else >= 0.01")
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    seed: int | None = Field(None, ge=-(2 ** 63), lt=2 ** 64, description="makes a sampled request reproducible")
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    ignore_eos: bool = Field(False, description="vLLM's extension: generate max_tokens even past the end of turn")
    robust: bool | None = None
    adapter: str | None = None

    def sampling(self, max_tokens: int | None = None, stop: str | list[str] | None = None) -> SamplingRequest:
        stops = [stop] if isinstance(stop, str) else (stop or [])
        return SamplingRequest(max_tokens or self.max_tokens, self.temperature, self.top_p, self.seed, tuple(stops),
                               self.presence_penalty, self.frequency_penalty, self.ignore_eos)


class ChatRequest(Sampled):
    model: str | None = None
    messages: list[Message] = Field(..., min_length=1, max_length=256)
    max_completion_tokens: int | None = Field(None, ge=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: Literal[1] = 1
    stop: str | list[str] | None = None
    user: str | None = None
    logprobs: Literal[False] | None = Field(None, description="log probabilities are not returned")


class CaptionRequest(Sampled):
    model: str | None = None
    image: str = Field(..., min_length=1)
    prompt: str | None = Field(None, description="instruction; default 'Describe the image in one sentence.'")


class VqaRequest(Sampled):
    model: str | None = None
    image: str = Field(..., min_length=1)
    question: str = Field(..., min_length=1)


class TextResponse(BaseModel):
    model: str
    robust: bool
    adapter: str | None
    text: str
    finish_reason: str
    usage: dict[str, int]
