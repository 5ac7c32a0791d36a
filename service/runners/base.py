"""What flows between the engine and the runners: work kinds, work items, outputs, runner contracts.

A CLIP-family model is served by a ``BatchRunner`` behind the engine's dynamic batcher (every item
one image or one text); a chat model by a ``GenerationRunner`` behind its continuous-batching
scheduler. The engine imports these contracts; nothing here (or in any runner) imports the engine.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from PIL import Image

from adapters import Adapter
from service.errors import NotFound
from service.runners.detok import RowText
from service.runners.kvbatch import DecodeBatch, PrefilledRow


class WorkKind(str, enum.Enum):
    IMAGE = "image"  # classify or embed one image (R-Adapt applies)
    TEXT = "text"  # embed one text
    GRADIENT = "gradient"  # one attack step: the input gradient of a zero-shot loss (R-Adapt applies)


@dataclass(eq=False)
class WorkItem:
    """One unit of batched work; ``payload`` is the runner's prepared input."""

    kind: WorkKind
    payload: Any
    adapter: str | None = None  # adapter name; None = standard mode
    future: asyncio.Future = field(default=None)  # type: ignore[assignment]  # set by submit
    enqueued: float = 0.0
    deadline: float = float("inf")


@dataclass(frozen=True)
class Output:
    """A runner's result for one item, with the adapter object that actually ran (None = standard)."""

    value: Any
    adapter_id: str | None = None


def adapter_for(name: str | None, adapters: Mapping[str, Adapter]) -> Adapter | None:
    """The adapter a request runs with, from the worker's snapshot (None: standard mode). Raises
    ``NotFound`` when the adapter was removed after the request was admitted."""
    if name is None:
        return None
    adapter = adapters.get(name)
    if adapter is None:
        raise NotFound(f"adapter {name!r} was removed", "adapter_not_found")
    return adapter


class Runner(Protocol):
    """What every runner has: the tasks it serves and a warm-up through its real path at load."""

    tasks: frozenset[str]

    def warmup(self, adapters: Mapping[str, Adapter]) -> None: ...


class PreparedText(Protocol):
    """A prepared text: its token ids (the engine reports them as usage)."""

    @property
    def ids(self) -> tuple[int, ...]: ...


class BatchRunner(Runner, Protocol):
    """A CLIP-family runner behind the dynamic batcher: ``prepare_*`` in the worker pool (CPU), each
    result an item's ``payload``; ``run_batch`` in the model thread."""

    def prepare_image(self, image: Image.Image, labels: Sequence[str] = (), template: str = "{}",
                      top_k: int | None = None) -> Any:
        """An ``IMAGE`` item's payload: classification over ``labels`` (empty: an embedding)."""
        ...

    def prepare_texts(self, texts: list[str]) -> Sequence[PreparedText]:
        """One ``TEXT`` item's payload per text."""
        ...

    def prepare_attack(self, image: Image.Image) -> torch.Tensor:
        """``[3, H, W]`` in [0, 1]: the pixels an attack perturbs (``GRADIENT`` items)."""
        ...

    def run_batch(self, items: list[WorkItem], adapters: Mapping[str, Adapter]) -> list[Output | Exception]:
        """Model thread: one ``Output`` or the item's own error per item, in order."""
        ...


class PreparedPrompt(Protocol):
    """A prepared prompt, as the engine and the scheduler see it: its length in tokens."""

    @property
    def length(self) -> int: ...


class GenerationRunner(Runner, Protocol):
    """The mechanics the scheduler drives (``service.runners.vlm.VlmRunner``). A backend that schedules
    by itself (vLLM) would replace the scheduler and this contract together: it takes the engine's
    ``GenerationRequest`` (prompt, ``SamplingParams``, adapter, deadline, stream) and resolves its future."""

    eos: frozenset[int]
    device: torch.device
    context_length: int  # tokens; 0 = unknown

    def prepare(self, messages: list[dict[str, Any]], images: Sequence[Image.Image]) -> PreparedPrompt:
        """Worker pool: processor messages ({"type": "image"} parts) and their images, in order."""
        ...

    def text_of(self, stop: tuple[str, ...]) -> RowText:
        """A new row's detokeniser, stopping at ``stop``."""
        ...

    def prefill(self, prompt: Any, adapter: Adapter | None) -> tuple[torch.Tensor, PrefilledRow]:
        """Model thread: ``prompt`` (what ``prepare`` returned) alone -> (next-token scores ``[V]``, its cache)."""
        ...

    def decode(self, batch: DecodeBatch, tokens: list[int]) -> torch.Tensor:
        """Model thread: one step for every row of ``batch`` -> scores ``[B, V]``."""
        ...
