"""LLaVA and Qwen-VL runner: chat, captioning and VQA as one batched, streamable generation.

``prepare`` (worker pool) renders the chat template and runs the processor for one request.
``run_batch`` (model thread) left-pads the prompts of all requests that share sampling settings,
concatenates their images, and calls ``generate`` once with R-Adapt per image
(``rmodel.control([...])``: each request's adapter repeated for each of its images). Each row
stops on its own (end of turn, its own ``max_new_tokens``, a stop string, or its client gone);
streamed rows get their text deltas as they are generated.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image
from transformers import StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from adapters import Adapter, AdapterError, RAdaptModel
from adapters.loading import LoadedModel
from service.engine.batcher import WorkItem
from service.errors import BadRequest, NotFound

GENERATE = "generate"


class TokenStream:
    """Text deltas from the model thread to one request's coroutine (None ends the stream)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[str | None] = asyncio.Queue()

    def push(self, text: str | None) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, text)


@dataclass(frozen=True)
class Sampling:
    max_new_tokens: int
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    stop: tuple[str, ...] = ()

    @property
    def key(self) -> tuple[bool, float, float]:
        """Requests with equal keys share one generate call."""
        greedy = self.temperature <= 0.0
        return (not greedy, 0.0 if greedy else self.temperature, 1.0 if greedy else self.top_p)


@dataclass(frozen=True)
class Prompt:
    """One request: processor outputs with batch size 1 (``input_ids: [1, L]``) and its images."""

    inputs: dict[str, torch.Tensor]
    n_images: int
    sampling: Sampling
    stream: TokenStream | None = field(default=None, compare=False)

    @property
    def length(self) -> int:
        return int(self.inputs["input_ids"].shape[1])


@dataclass(frozen=True)
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # stop | length


class _Row:
    """Per-row decoding state shared by the streamer and the stopping criterion."""

    def __init__(self, item: WorkItem, tokenizer: Any, eos: set[int]) -> None:
        self.item, self.tokenizer, self.eos = item, tokenizer, eos
        self.prompt: Prompt = item.payload
        self.tokens: list[int] = []
        self.sent = ""
        self.done = False
        self.eos_hit = False
        self.reason = "length"

    def add(self, token: int) -> None:
        if self.done:
            return
        if token in self.eos:
            self.done, self.reason, self.eos_hit = True, "stop", True
            return
        self.tokens.append(token)
        text, hit = self._cut(self.tokenizer.decode(self.tokens, skip_special_tokens=True))
        if hit:
            self.done, self.reason = True, "stop"
        elif len(self.tokens) >= self.prompt.sampling.max_new_tokens:
            self.done = True
        # hold back an incomplete UTF-8 sequence; the route flushes what is left at the end
        if self.prompt.stream is not None and len(text) > len(self.sent) and text.startswith(self.sent) \
                and not text.endswith("\ufffd"):
            self.prompt.stream.push(text[len(self.sent):])
            self.sent = text

    def _cut(self, text: str) -> tuple[str, bool]:
        cuts = [text.find(s) for s in self.prompt.sampling.stop if s in text]
        return (text[:min(cuts)], True) if cuts else (text, False)

    def result(self) -> Generation:
        text, _ = self._cut(self.tokenizer.decode(self.tokens, skip_special_tokens=True))
        return Generation(text, self.prompt.length, len(self.tokens) + int(self.eos_hit), self.reason)


class _Streamer(BaseStreamer):
    """Receives ``[B]`` new tokens per step from ``generate`` (the first call is the prompt)."""

    def __init__(self, rows: list[_Row]) -> None:
        self.rows, self.started = rows, False

    def put(self, value: torch.Tensor) -> None:
        if not self.started:
            self.started = True
            return
        for row, token in zip(self.rows, value.view(len(self.rows), -1)[:, -1].tolist(), strict=True):
            row.add(int(token))

    def end(self) -> None:
        pass


class _RowStop(StoppingCriteria):
    """Finishes each row on its own: done decoding, or its client went away."""

    def __init__(self, rows: list[_Row]) -> None:
        self.rows = rows

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        gone = [r.item.future is not None and r.item.future.cancelled() for r in self.rows]
        return torch.tensor([r.done or g for r, g in zip(self.rows, gone, strict=True)], device=input_ids.device)


class VlmRunner:
    tasks = frozenset({"chat", "caption", "vqa"})

    def __init__(self, loaded: LoadedModel, rmodel: RAdaptModel, settings: Any) -> None:
        self.loaded, self.rmodel, self.model = loaded, rmodel, loaded.model
        self.family = loaded.family
        self.processor = loaded.processor
        self.tokenizer = loaded.processor.tokenizer
        gen = self.model.generation_config
        eos = gen.eos_token_id if gen.eos_token_id is not None else self.tokenizer.eos_token_id
        self.eos = set(eos if isinstance(eos, list) else [eos])
        pad = gen.pad_token_id if gen.pad_token_id is not None else self.tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else next(iter(self.eos)))
        self.device, self.dtype = loaded.device, loaded.dtype
        text_config = getattr(self.model.config, "text_config", self.model.config)
        self.max_positions = int(getattr(text_config, "max_position_embeddings", 0) or 0)

    # worker pool
    def prepare(self, messages: list[dict[str, Any]], images: Sequence[Image.Image], sampling: Sampling,
                stream: TokenStream | None = None) -> Prompt:
        """``messages`` in the processor's chat format ({"type": "image"} parts), ``images`` in order."""
        try:
            text = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            enc = self.processor(text=[text], images=list(images) or None, return_tensors="pt")
        except (ValueError, TypeError, KeyError) as exc:
            raise BadRequest(f"cannot build the prompt: {exc}", "invalid_messages") from None
        inputs = {k: v for k, v in enc.items() if isinstance(v, torch.Tensor)}
        prompt = Prompt(inputs, len(images), sampling, stream)
        # refuse here what would make generate() fail for every request of the batch
        if self.max_positions and prompt.length + sampling.max_new_tokens > self.max_positions:
            raise BadRequest(f"prompt ({prompt.length} tokens) plus max_tokens ({sampling.max_new_tokens}) exceeds "
                             f"the model's context of {self.max_positions} tokens", "context_length_exceeded")
        return prompt

    # model thread
    @torch.inference_mode()
    def run_batch(self, items: list[WorkItem], adapters: Mapping[str, Adapter]) -> list[Any]:
        results: list[Any] = [None] * len(items)
        groups: dict[tuple, list[int]] = {}
        for i, item in enumerate(items):
            if item.adapter is not None and item.adapter not in adapters:
                results[i] = NotFound(f"adapter {item.adapter!r} was removed", "adapter_not_found")
                continue
            groups.setdefault(item.payload.sampling.key, []).append(i)
        for key, idx in groups.items():
            try:
                for i, gen in zip(idx, self._generate([items[i] for i in idx], adapters, key), strict=True):
                    results[i] = gen
            except AdapterError as exc:
                for i in idx:
                    results[i] = BadRequest(str(exc), "adapter_mismatch")
            finally:
                for i in idx:
                    if items[i].payload.stream is not None:
                        items[i].payload.stream.push(None)
        return results

    def _generate(self, items: list[WorkItem], adapters: Mapping[str, Adapter],
                  key: tuple[bool, float, float]) -> list[Generation]:
        samples: list[Adapter | None] = []
        for item in items:
            adapter = adapters[item.adapter] if item.adapter is not None else None
            item.adapter_id = adapter.uid if adapter is not None else None
            samples += [adapter] * item.payload.n_images
        batch = self._collate([item.payload for item in items])
        rows = [_Row(item, self.tokenizer, self.eos) for item in items]
        do_sample, temperature, top_p = key
        sampling = dict(do_sample=True, temperature=temperature, top_p=top_p) if do_sample else dict(do_sample=False)
        with self.rmodel.control(samples):
            self.model.generate(**batch, max_new_tokens=max(i.payload.sampling.max_new_tokens for i in items),
                                pad_token_id=self.pad_id, streamer=_Streamer(rows),
                                stopping_criteria=StoppingCriteriaList([_RowStop(rows)]), **sampling)
        return [row.result() for row in rows]

    def _collate(self, prompts: list[Prompt]) -> dict[str, torch.Tensor]:
        """Left-pad token-aligned tensors (``[1, L]`` -> ``[B, W]``), concatenate per-image ones."""
        width = max(p.length for p in prompts)
        out: dict[str, torch.Tensor] = {}
        names = dict.fromkeys(name for p in prompts for name in p.inputs)  # pixel keys may be absent in some
        for name in names:
            values = [p.inputs[name] for p in prompts if name in p.inputs]
            token_aligned = len(values) == len(prompts) and all(
                v.dim() == 2 and v.shape == (1, p.length) for v, p in zip(values, prompts, strict=True))
            if token_aligned:
                fill = self.pad_id if name == "input_ids" else 0
                padded = torch.full((len(prompts), width), fill, dtype=values[0].dtype)
                for r, v in enumerate(values):
                    padded[r, width - v.shape[1]:] = v[0]
                out[name] = padded.to(self.device)
            else:
                t = torch.cat(values)
                out[name] = t.to(self.device, self.dtype if t.is_floating_point() else t.dtype)
        return out

    def warmup(self, adapters: Mapping[str, Adapter]) -> None:
        """A two-token generation with an image, standard and with each adapter."""
        image = Image.new("RGB", (32, 32), (127, 127, 127))
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "warm up"}]}]
        prompt = self.prepare(messages, [image], Sampling(max_new_tokens=2))
        items = [WorkItem(GENERATE, prompt, name) for name in [None, *adapters]]
        for result in self.run_batch(items, adapters):
            if isinstance(result, Exception):
                raise result
