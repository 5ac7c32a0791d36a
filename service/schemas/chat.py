"""Schemas of /v1/chat/completions (OpenAI-compatible subset), /v1/caption and /v1/vqa."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


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
    role: Literal["system", "user", "assistant"]
    content: str | list[Part]
    name: str | None = None


class StreamOptions(Strict):
    include_usage: bool = False


class Sampled(Strict):
    max_tokens: int | None = Field(None, ge=1, description="new tokens at most (server default and limit apply)")
    temperature: float | None = Field(None, ge=0.0, le=2.0, description="0 or unset = greedy")
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    robust: bool | None = None
    adapter: str | None = None


class ChatRequest(Sampled):
    model: str | None = None
    messages: list[Message] = Field(..., min_length=1, max_length=256)
    max_completion_tokens: int | None = Field(None, ge=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: Literal[1] = 1
    stop: str | list[str] | None = None
    user: str | None = None


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
