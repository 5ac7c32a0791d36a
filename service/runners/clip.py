"""CLIP runner: zero-shot classification, image and text embeddings.

Contract shared by all runners: ``prepare_*`` run per request in the worker pool (CPU), and
``run_batch(items, adapters)`` runs in the model thread with one forward for the whole mixed batch:
every image of the batch -- classify or embed, robust or standard, any adapter -- goes through one
vision forward with R-Adapt applied per sample; every text (text embeddings and label prompts the
LRU does not hold yet) through one text forward. Attack steps (``GRADIENT`` items: the engine's
``attack``) get one forward and backward of their own in the same call, so an attack advances one
step per batch, paced by the engine so serving goes first (``attack_share``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from adapters import Adapter, AdapterError, RAdaptModel
from adapters.zoo.loading import LoadedModel
from service.errors import BadRequest, NotFound
from service.runners.base import Output, WorkItem, WorkKind, adapter_for
from service.runners.preprocess import image_preprocessor

IMAGE, TEXT, GRADIENT = WorkKind.IMAGE, WorkKind.TEXT, WorkKind.GRADIENT


@dataclass(frozen=True)
class ClipImage:
    """``pixels: [3, H, W]`` float32; ``prompts`` set for classification (one per label)."""

    pixels: torch.Tensor
    labels: tuple[str, ...] = ()
    prompts: tuple[str, ...] = ()
    top_k: int | None = None


@dataclass(frozen=True)
class ClipText:
    ids: tuple[int, ...]


@dataclass(frozen=True)
class ClipGradient:
    """One attack step. ``pixels: [3, H, W]`` in [0, 1] at the model's input size (normalised inside
    the forward, so the gradient is with respect to pixels); the loss is the cross-entropy of the
    zero-shot logits over ``prompts`` at label ``target`` (None: the image's top-1 label now)."""

    pixels: torch.Tensor
    prompts: tuple[str, ...]
    target: int | None = None


@dataclass(frozen=True)
class GradientStep:
    """``grad: [3, H, W]`` float32 on the CPU; ``probs`` over the prompts at the input that was sent."""

    grad: torch.Tensor
    target: int
    probs: tuple[float, ...]


class LabelCache:
    """Bounded LRU: prompt text -> normalised text embedding ``[D]`` (model thread only)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[str, torch.Tensor] = OrderedDict()

    def get(self, prompt: str) -> torch.Tensor | None:
        hit = self._items.get(prompt)
        if hit is not None:
            self._items.move_to_end(prompt)
        return hit

    def put(self, prompt: str, emb: torch.Tensor) -> None:
        if self.capacity <= 0:
            return
        self._items[prompt] = emb
        self._items.move_to_end(prompt)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


class ClipRunner:
    family = "clip"
    tasks = frozenset({"classify", "embeddings"})

    def __init__(self, loaded: LoadedModel, rmodel: RAdaptModel, label_cache_size: int = 4096) -> None:
        self.loaded, self.rmodel = loaded, rmodel
        self.model = loaded.model
        self.device, self.dtype = loaded.device, loaded.dtype
        self.tokenizer = loaded.processor.tokenizer
        self.preprocess = image_preprocessor(loaded.processor.image_processor)
        self.max_len = int(self.model.config.text_config.max_position_embeddings)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self.cache = LabelCache(label_cache_size)
        self.logit_scale = float(self.model.logit_scale.detach().float().exp())
        # the processor's normalisation, for attacks (they work on pixels in [0, 1]): [1, 3, 1, 1]
        self.pixel_mean = torch.tensor(rmodel.family.image_mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.pixel_std = torch.tensor(rmodel.family.image_std, dtype=torch.float32).view(1, 3, 1, 1)
        self._device_norm = (self.pixel_mean.to(self.device), self.pixel_std.to(self.device))

    # CPU side (worker pool)
    def prepare_image(self, image: Image.Image, labels: Sequence[str] = (), template: str = "{}",
                      top_k: int | None = None) -> ClipImage:
        prompts = tuple(template.replace("{}", label) for label in labels)
        return ClipImage(self.preprocess(image), tuple(labels), prompts, top_k)

    def prepare_attack(self, image: Image.Image) -> torch.Tensor:
        """The image as the model sees it, in [0, 1] (``[3, H, W]``): preprocessing undone after the
        resize and crop, so an attack perturbs the very pixels the encoder gets."""
        pixels = self.preprocess(image) * self.pixel_std[0] + self.pixel_mean[0]
        return (pixels.clamp(0.0, 1.0) * 255.0).round() / 255.0  # whole 8-bit levels: an image again

    def prepare_text(self, text: str) -> ClipText:
        return ClipText(tuple(self.tokenize([text])[0]))

    def prepare_texts(self, texts: list[str]) -> list[ClipText]:
        return [ClipText(tuple(ids)) for ids in self.tokenize(texts)]

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        return self.tokenizer(list(texts), truncation=True, max_length=self.max_len)["input_ids"]

    # model thread
    def run_batch(self, items: list[WorkItem], adapters: Mapping[str, Adapter]) -> list[Output | Exception]:
        attack = [i for i, item in enumerate(items) if item.kind == GRADIENT]
        if not attack:  # serving's path: nothing else to do
            return self._infer(items, adapters)
        results: list[Any] = [None] * len(items)
        rest = [i for i in range(len(items)) if items[i].kind != GRADIENT]
        if rest:
            for i, out in zip(rest, self._infer([items[i] for i in rest], adapters), strict=True):
                results[i] = out
        for i, out in zip(attack, self._gradients([items[i] for i in attack], adapters), strict=True):
            results[i] = out
        return results

    @torch.inference_mode()
    def _infer(self, items: list[WorkItem], adapters: Mapping[str, Adapter]) -> list[Output | Exception]:
        results: list[Any] = [None] * len(items)
        images: list[int] = []
        samples: list[Adapter | None] = []
        for i, item in enumerate(items):
            if item.kind != IMAGE:
                continue
            try:
                adapter = adapter_for(item.adapter, adapters)
            except NotFound as exc:  # removed after the request was admitted: this item's error
                results[i] = exc
                continue
            samples.append(adapter)
            images.append(i)
        texts = [i for i, item in enumerate(items) if item.kind == TEXT]
        known, missing = self._lookup_prompts(items[i].payload for i in images)
        ids = [list(items[i].payload.ids) for i in texts] + (self.tokenize(missing) if missing else [])
        text_emb = self._encode_texts(ids)
        if texts:
            rows = text_emb[:len(texts)].cpu().numpy()  # one device->host copy for all of them
            for k, i in enumerate(texts):
                results[i] = Output(rows[k])
        for k, prompt in enumerate(missing):
            known[prompt] = text_emb[len(texts) + k]
            self.cache.put(prompt, known[prompt])
        if images:
            img_emb = self._encode_images([items[i].payload.pixels for i in images], samples)
            outs = self._image_results([items[i].payload for i in images], img_emb, known)
            for i, out, adapter in zip(images, outs, samples, strict=True):
                results[i] = Output(out, None if adapter is None else adapter.uid)
        return results

    def _gradients(self, items: list[WorkItem], adapters: Mapping[str, Adapter]) -> list[Output | Exception]:
        """Attack steps: one forward and backward for all of them, R-Adapt per sample (an attack on
        robust mode differentiates through the filter and the anchor)."""
        results: list[Any] = [None] * len(items)
        live: list[int] = []
        samples: list[Adapter | None] = []
        for i, item in enumerate(items):
            try:
                adapter = adapter_for(item.adapter, adapters)
            except NotFound as exc:
                results[i] = exc
                continue
            live.append(i)
            samples.append(adapter)
        if not live:
            return results
        payloads: list[ClipGradient] = [items[i].payload for i in live]
        with torch.inference_mode():
            known, missing = self._lookup_prompts(payloads)
            if missing:
                for prompt, emb in zip(missing, self._encode_texts(self.tokenize(missing)), strict=True):
                    known[prompt] = emb
                    self.cache.put(prompt, emb)
        # the label embeddings are constants of the loss; clones outside inference mode can enter autograd
        texts = [torch.stack([known[p] for p in pl.prompts]).clone() for pl in payloads]
        x = torch.stack([pl.pixels for pl in payloads]).to(self.device, torch.float32).requires_grad_(True)
        mean, std = self._device_norm
        with torch.enable_grad():
            try:
                with self.rmodel.control(samples):
                    out = self.model.get_image_features(pixel_values=((x - mean) / std).to(self.dtype))
            except AdapterError as exc:
                raise BadRequest(str(exc), "adapter_mismatch") from None
            emb = F.normalize(_pooled(out).float(), dim=-1)
            losses, targets, probs = [], [], []
            for k, (pl, text) in enumerate(zip(payloads, texts, strict=True)):
                logits = self.logit_scale * emb[k] @ text.T  # [L]
                target = int(logits.argmax()) if pl.target is None else pl.target
                losses.append(F.cross_entropy(logits[None], torch.tensor([target], device=self.device)))
                targets.append(target)
                probs.append(tuple(logits.detach().softmax(-1).cpu().tolist()))
            (grad,) = torch.autograd.grad(torch.stack(losses).sum(), [x])
        grad = grad.detach().float().cpu()
        for k, i in enumerate(live):
            results[i] = Output(GradientStep(grad[k], targets[k], probs[k]),
                                None if samples[k] is None else samples[k].uid)
        return results

    def _image_results(self, payloads: list[ClipImage], img_emb: torch.Tensor,
                       known: Mapping[str, torch.Tensor]) -> list[Any]:
        """Embeddings as float32 arrays; classifications as ranked (label, score), one matmul per label set."""
        out: list[Any] = [None] * len(payloads)
        embed = [k for k, p in enumerate(payloads) if not p.prompts]
        if embed:
            rows = img_emb[embed].cpu().numpy()
            for j, k in enumerate(embed):
                out[k] = rows[j]
        groups: dict[tuple[str, ...], list[int]] = {}
        for k, p in enumerate(payloads):
            if p.prompts:
                groups.setdefault(p.prompts, []).append(k)
        for prompts, ks in groups.items():
            text = torch.stack([known[p] for p in prompts])  # [L, D]
            probs = (self.logit_scale * img_emb[ks] @ text.T).softmax(-1).cpu().tolist()  # [k, L]
            for k, row in zip(ks, probs, strict=True):
                ranked = sorted(zip(payloads[k].labels, row, strict=True), key=lambda x: -x[1])
                out[k] = ranked[:payloads[k].top_k] if payloads[k].top_k else ranked
        return out

    def _lookup_prompts(self, payloads: Any) -> tuple[dict[str, torch.Tensor], list[str]]:
        """This batch's prompts: those the LRU holds, and the rest (in first-seen order)."""
        known: dict[str, torch.Tensor] = {}
        missing: dict[str, None] = {}
        for p in payloads:
            for prompt in p.prompts:
                if prompt in known or prompt in missing:
                    continue
                hit = self.cache.get(prompt)
                if hit is None:
                    missing[prompt] = None
                else:
                    known[prompt] = hit
        return known, list(missing)

    def _encode_texts(self, ids: list[list[int]]) -> torch.Tensor:
        """Normalised text embeddings ``[N, D]`` (right padding with an attention mask)."""
        if not ids:
            return torch.empty(0)
        width = max(len(x) for x in ids)
        input_ids = torch.full((len(ids), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.long)
        for r, x in enumerate(ids):
            input_ids[r, :len(x)] = torch.tensor(x)
            mask[r, :len(x)] = 1
        out = self.model.get_text_features(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device))
        return F.normalize(_pooled(out).float(), dim=-1)

    def _encode_images(self, pixels: list[torch.Tensor], samples: list[Adapter | None]) -> torch.Tensor:
        """Normalised image embeddings ``[B, D]``; one vision forward, R-Adapt per sample."""
        px = torch.stack(pixels).to(self.device, self.dtype, non_blocking=True)
        try:
            with self.rmodel.control(samples):
                out = self.model.get_image_features(pixel_values=px)
        except AdapterError as exc:
            raise BadRequest(str(exc), "adapter_mismatch") from None
        return F.normalize(_pooled(out).float(), dim=-1)

    def warmup(self, adapters: Mapping[str, Adapter]) -> None:
        """A standard and a robust image (each adapter's path) plus a text through the real path."""
        size = self.rmodel.fingerprint.image_size
        payload = self.prepare_image(Image.new("RGB", (size, size), (127, 127, 127)), ["warm up"], "{}")
        items = [WorkItem(IMAGE, payload, None), WorkItem(TEXT, self.prepare_text("warm up"))]
        items += [WorkItem(IMAGE, payload, name) for name in adapters]
        for result in self.run_batch(items, adapters):
            if isinstance(result, Exception):
                raise result


def _pooled(out: Any) -> torch.Tensor:
    """transformers 5 returns a model output whose pooler_output is the projected embedding."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output

