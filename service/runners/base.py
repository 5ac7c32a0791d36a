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

from adapters import Adapter
from service.errors import NotFound


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
    tasks: frozenset[str]

    def warmup(self, adapters: Mapping[str, Adapter]) -> None: ...


class BatchRunner(Runner, Protocol):
    def run_batch(self, items: list[WorkItem], adapters: Mapping[str, Adapter]) -> list[Output | Exception]:
        """Model thread: one ``Output`` or the item's own error per item, in order."""
        ...


class GenerationRunner(Runner, Protocol):
    """The mechanics the scheduler drives (``service.runners.vlm.VlmRunner``). A backend that schedules
    by itself (vLLM) would replace the scheduler and this contract together: it takes the engine's
    ``GenerationRequest`` (prompt, ``SamplingParams``, adapter, deadline, stream) and resolves its future."""

    eos: frozenset[int]
    device: Any
    context_length: int

    def prepare(self, messages: list[dict[str, Any]], images: Sequence[Any]) -> Any: ...

    def text_of(self, stop: tuple[str, ...]) -> Any: ...

    def prefill(self, prompt: Any, adapter: Adapter | None) -> tuple[Any, Any]: ...

    def decode(self, batch: Any, tokens: list[int]) -> Any: ...
