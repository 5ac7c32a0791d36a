"""LLaVA and Qwen-VL runner: the transformers mechanics of continuous batching (no policy here).

``prepare`` (worker pool) renders the chat template and runs the processor for one request.
In the model thread, ``prefill`` runs one prompt alone (its images through the vision tower with
R-Adapt: the request's adapter, or none) and returns its first scores and a batch-of-one cache;
``decode`` runs one step for every row of a ``DecodeBatch``. Which rows run, join and leave is the
decision of the engine's scheduler.

Positions: a prompt is prefilled alone, without padding, so the model's own positions are right;
Qwen-VL's M-RoPE gives image tokens 3-D positions, after which text positions continue from
``length + rope_delta`` per row, which ``PrefilledRow.next_position`` carries into the batch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image
from transformers import DynamicCache

from adapters import Adapter, RAdaptModel
from adapters.zoo.loading import LoadedModel
from service.errors import BadRequest
from service.runners.detok import RowText
from service.runners.kvbatch import DecodeBatch, PrefilledRow


@dataclass(frozen=True)
class Prompt:
    """One request's processor outputs with batch size 1 (``input_ids: [1, L]``) and its image count."""

    inputs: dict[str, torch.Tensor]
    n_images: int

    @property
    def length(self) -> int:
        return int(self.inputs["input_ids"].shape[1])


class VlmRunner:
    tasks = frozenset({"chat", "caption", "vqa"})

    def __init__(self, loaded: LoadedModel, rmodel: RAdaptModel) -> None:
        self.rmodel, self.model = rmodel, loaded.model
        self.family = loaded.family
        self.processor = loaded.processor
        self.tokenizer = loaded.processor.tokenizer
        gen = self.model.generation_config
        eos = gen.eos_token_id if gen.eos_token_id is not None else self.tokenizer.eos_token_id
        self.eos = frozenset(eos if isinstance(eos, list) else [eos])
        self.device, self.dtype = loaded.device, loaded.dtype
        text_config = self.model.config.get_text_config(decoder=True)
        self.context_length = int(getattr(text_config, "max_position_embeddings", 0) or 0)  # 0 = unknown
        self.mrope = hasattr(getattr(self.model, "model", None), "get_rope_index")
        # K and V of one token in every layer: the memory a running row costs per token
        heads = getattr(text_config, "num_key_value_heads", None) or text_config.num_attention_heads
        head_dim = getattr(text_config, "head_dim", None) or text_config.hidden_size // text_config.num_attention_heads
        self.kv_bytes_per_token = 2 * text_config.num_hidden_layers * heads * head_dim * self.dtype.itemsize

    # worker pool
    def prepare(self, messages: list[dict[str, Any]], images: Sequence[Image.Image]) -> Prompt:
        """``messages`` in the processor's chat format ({"type": "image"} parts), ``images`` in order."""
        try:
            text = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            enc = self.processor(text=[text], images=list(images) or None, return_tensors="pt")
        except (ValueError, TypeError, KeyError) as exc:
            raise BadRequest(f"cannot build the prompt: {exc}", "invalid_messages") from None
        return Prompt({k: v for k, v in enc.items() if isinstance(v, torch.Tensor)}, len(images))

    def text_of(self, stop: tuple[str, ...]) -> RowText:
        return RowText(self.tokenizer, stop)

    # model thread
    @torch.inference_mode()
    def prefill(self, prompt: Prompt, adapter: Adapter | None) -> tuple[torch.Tensor, PrefilledRow]:
        """Run one prompt -> (scores of the next token ``[V]`` float32, its cache)."""
        inputs = {k: v.to(self.device, self.dtype if v.is_floating_point() else v.dtype)
                  for k, v in prompt.inputs.items()}
        length = prompt.length
        extra: dict[str, Any] = {}
        next_position = length
        if self.mrope and "image_grid_thw" in inputs:
            positions, delta = self.model.model.get_rope_index(
                inputs["input_ids"], inputs["mm_token_type_ids"], image_grid_thw=inputs["image_grid_thw"],
                attention_mask=inputs["attention_mask"])
            extra["position_ids"] = positions
            next_position = length + int(delta.view(-1)[0])
        cache = DynamicCache(config=self.model.config)
        with self.rmodel.control([adapter] * prompt.n_images):
            out = self.model(**inputs, **extra, cache=cache, use_cache=True, logits_to_keep=1)
        return out.logits[0, -1].float(), PrefilledRow(cache, length, next_position)

    @torch.inference_mode()
    def decode(self, batch: DecodeBatch, tokens: list[int]) -> torch.Tensor:
        """One step for every row: feeds each row's newest token -> scores ``[B, V]`` float32."""
        ids = torch.tensor(tokens, dtype=torch.long, device=self.device)
        input_ids, mask, positions = batch.step_inputs(ids)
        out = self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions, cache=batch.cache,
                         use_cache=True)
        batch.advance(mask)
        return out.logits[:, -1].float()

    def warmup(self, adapters: Mapping[str, Adapter]) -> None:
        """A prefill and two decode steps with an image, standard and with each adapter."""
        image = Image.new("RGB", (32, 32), (127, 127, 127))
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "warm up"}]}]
        prompt = self.prepare(messages, [image])
        rows = []
        for adapter in [None, *adapters.values()]:
            scores, row = self.prefill(prompt, adapter)
            rows.append((int(scores.argmax()), row))
        batch = DecodeBatch(rows[0][1], self.device)
        batch.extend([r for _, r in rows[1:]])
        scores = self.decode(batch, [t for t, _ in rows])
        self.decode(batch, scores.argmax(-1).tolist())
