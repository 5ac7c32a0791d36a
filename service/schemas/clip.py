"""Schemas of /v1/classify and /v1/embeddings.

Sizes are bounded by the schema where the bound is fixed and by the server's settings (labels,
inputs, text length) in the engine, so that limits follow the configuration.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field

from service.schemas.base import Strict

Text = Annotated[str, Field(min_length=1)]


class ClassifyRequest(Strict):
    model: str | None = Field(None, description="served model; default: the first that classifies")
    image: str = Field(..., min_length=1, description="base64 bytes or a data URI (an http(s) URL when enabled)")
    labels: list[Text] = Field(..., min_length=1, description="candidate labels (at least one)")
    template: str | None = Field(None, description="prompt with {} for the label; default 'a photo of a {}.'; "
                                 "'{}' = the bare label")
    top_k: int | None = Field(None, ge=1, description="return only the k best labels")
    robust: bool | None = Field(None, description="R-Adapt on/off; default: the server's default_robust")
    adapter: str | None = Field(None, description="adapter name (implies robust); default: 'default'")


class LabelScore(BaseModel):
    label: str
    score: float


class ClassifyResponse(BaseModel):
    model: str
    robust: bool
    adapter: str | None
    results: list[LabelScore]


class EmbeddingsRequest(Strict):
    model: str | None = None
    input: str | list[str] = Field(..., description="a text or list of texts; data URIs when modality=image")
    modality: Literal["text", "image"] = "text"
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, description="not supported (CLIP embeddings have a fixed size)")
    user: str | None = None
    robust: bool | None = None
    adapter: str | None = None


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingsResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: Usage
    robust: bool
    adapter: str | None
