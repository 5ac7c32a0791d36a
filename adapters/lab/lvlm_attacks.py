"""End-to-end attacks on LLaVA and Qwen-VL: the teacher-forced language-model loss of reference texts.

Threat model (RobustVLM's, Schlarmann et al. 2024): the image in **[0, 1]** at the resolution the
model's processor produces, **normalisation inside** the attacked function, L-inf eps in 1/255.
The attacker *maximises* the mean (over reference texts) of the per-token cross-entropy of each
reference given the prompt and the image, through the whole model with R-Adapt applied (the
filter and the anchor sit inside the forward, under ``rmodel.control``).

- LLaVA: ``x: [1, 3, H, W]`` is normalised and fed as ``pixel_values``.
- Qwen-VL: the processor's packed patches are un-patchified once into ``x: [1, 3, H, W]`` (the
  image at its resized grid); every forward normalises ``x``, repeats it over the temporal patch
  and patchifies it back (``QwenFamily.patchify``), so the attack lives in pixel space and the
  gradient flows through the packing.

The attack loops themselves are ``adapters.lab.attacks`` (``apgd_loss``, ``pgd``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from adapters.lab.attacks import apgd_loss, pgd
from adapters.lab.zeroshot import Normalize
from adapters.method.anchor import Adapter
from adapters.method.model import RAdaptModel

if TYPE_CHECKING:
    from PIL import Image

LVLM_ATTACKS = ("apgd", "pgd")


@dataclass(frozen=True)
class Example:
    """One image with its prompt and reference texts, ready to attack.

    ``image: [1, 3, H, W]`` in [0, 1]; ``prompt``: processor tensors of the prompt alone (batch 1,
    no pixels); ``forced``: the teacher-forced batch, one row per reference (``input_ids``,
    ``attention_mask``, ``labels`` with -100 outside the reference tokens, ``[R, L]``);
    ``grid``: Qwen's ``(t, h, w)`` patch grid, ``None`` for LLaVA.
    """

    image: torch.Tensor
    prompt: dict[str, torch.Tensor]
    forced: dict[str, torch.Tensor]
    grid: tuple[int, int, int] | None = None

    @property
    def references(self) -> int:
        return int(self.forced["input_ids"].shape[0])


class LvlmTarget:
    """The attacked function of one injected LLaVA or Qwen-VL model and its processor."""

    def __init__(self, rmodel: RAdaptModel, processor: Any) -> None:
        self.rmodel, self.model, self.processor = rmodel, rmodel.model, processor
        self.tokenizer = processor.tokenizer
        param = next(self.model.parameters())
        self.device, self.dtype = param.device, param.dtype
        self.qwen = bool(rmodel.family.variable_resolution)
        self.normalize = Normalize(rmodel.family.image_mean, rmodel.family.image_std).to(self.device)
        eos = self.tokenizer.eos_token_id
        self.eos = int(eos[0] if isinstance(eos, list) else eos)
        pad = self.tokenizer.pad_token_id
        self.pad = int(self.eos if pad is None else pad)

    # -- inputs ------------------------------------------------------------------------------------
    def example(self, image: Image.Image, prompt: str, references: Sequence[str]) -> Example:
        """Render the chat template for ``prompt`` with ``image``, tokenise each reference after it."""
        if not references:
            raise ValueError("an attack needs at least one reference text")
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
        text = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        enc = self.processor(text=[text], images=[image], return_tensors="pt")
        prompt_inputs = {k: v.to(self.device) for k, v in enc.items() if k != "pixel_values"}
        pixels, grid = self._unit_pixels(image)
        sep = "" if text[-1:].isspace() else " "
        rows = [self.tokenizer(sep + r.strip(), add_special_tokens=False)["input_ids"] + [self.eos]
                for r in references]
        return Example(pixels, prompt_inputs, self.forced_batch(prompt_inputs, rows), grid)

    def _unit_pixels(self, image: Image.Image) -> tuple[torch.Tensor, tuple[int, int, int] | None]:
        """The processor's resized image in [0, 1], not normalised: ``[1, 3, H, W]`` (and Qwen's grid)."""
        out = self.processor.image_processor([image], do_normalize=False, return_tensors="pt")
        pv = out["pixel_values"].float()
        if not self.qwen:
            return pv.clamp(0, 1).to(self.device), None
        grid = tuple(int(v) for v in out["image_grid_thw"][0].tolist())
        frames = self.rmodel.family.unpatchify(pv, grid)  # [t*T, 3, H, W], identical frames for an image
        return frames[:1].clamp(0, 1).to(self.device), grid  # type: ignore[return-value]

    def forced_batch(self, prompt: dict[str, torch.Tensor], rows: list[list[int]]) -> dict[str, torch.Tensor]:
        """The prompt (batch 1) followed by each reference's token ids (``rows``), right-padded:
        ``[R, L]`` tensors with ``labels`` (-100 outside the references)."""
        ids = prompt["input_ids"][0]
        n, width = len(rows), ids.shape[0] + max(len(r) for r in rows)
        out = {"input_ids": torch.full((n, width), self.pad, dtype=ids.dtype),
               "attention_mask": torch.zeros((n, width), dtype=torch.long),
               "labels": torch.full((n, width), -100, dtype=torch.long)}
        if "mm_token_type_ids" in prompt:
            out["mm_token_type_ids"] = torch.zeros((n, width), dtype=prompt["mm_token_type_ids"].dtype)
        for i, r in enumerate(rows):
            seq = torch.cat([ids.cpu(), torch.tensor(r, dtype=ids.dtype)])
            out["input_ids"][i, :len(seq)] = seq
            out["attention_mask"][i, :len(seq)] = 1
            out["labels"][i, ids.shape[0]:len(seq)] = torch.tensor(r)
            if "mm_token_type_ids" in out:
                out["mm_token_type_ids"][i, :ids.shape[0]] = prompt["mm_token_type_ids"][0].cpu()
        if "image_grid_thw" in prompt:
            out["image_grid_thw"] = prompt["image_grid_thw"].repeat(n, 1)
        return {k: v.to(self.device) for k, v in out.items()}

    def pixel_values(self, x: torch.Tensor, ex: Example, copies: int) -> torch.Tensor:
        """``x: [1, 3, H, W]`` in [0, 1] -> the model's ``pixel_values`` for ``copies`` prompts, differentiably.

        LLaVA: ``[copies, 3, H, W]``; Qwen: ``[copies * t*h*w, C*T*P*P]`` packed patches."""
        pixels = self.normalize(x.float()).to(self.dtype)
        if ex.grid is None:
            return pixels.expand(copies, -1, -1, -1)
        family = self.rmodel.family
        t, _, _ = ex.grid
        frames = pixels.expand(t * family.temporal, -1, -1, -1)
        return family.patchify(frames, ex.grid).repeat(copies, 1)

    # -- the attacked loss and generation ----------------------------------------------------------
    def loss(self, x: torch.Tensor, ex: Example, adapter: Adapter | None) -> torch.Tensor:
        """Mean over references of each reference's mean token cross-entropy: ``[1]`` (fp32).

        ``x: [1, 3, H, W]`` in [0, 1]; ``adapter`` None = standard mode. Differentiable in ``x``.
        """
        if x.shape[0] != 1:
            raise ValueError(f"one image per call, got x of shape {tuple(x.shape)}")
        forced = dict(ex.forced)
        labels = forced.pop("labels")
        prompt_len = int(ex.prompt["input_ids"].shape[1])
        keep = labels.shape[1] - prompt_len + 1  # logits that predict the reference tokens only
        with self.rmodel.control([adapter] * ex.references):
            logits = self.model(**forced, pixel_values=self.pixel_values(x, ex, ex.references),
                                logits_to_keep=keep).logits.float()
        target = labels[:, prompt_len:]
        nll = F.cross_entropy(logits[:, :-1].transpose(1, 2), target, ignore_index=-100, reduction="none")
        per_ref = nll.sum(-1) / (target != -100).sum(-1).clamp(min=1)
        return per_ref.mean().reshape(1)

    def loss_fn(self, ex: Example, adapter: Adapter | None) -> Callable[[torch.Tensor], torch.Tensor]:
        return lambda x: self.loss(x, ex, adapter)

    @torch.no_grad()
    def generate(self, x: torch.Tensor, ex: Example, adapter: Adapter | None, max_new_tokens: int) -> str:
        """Greedy answer to the prompt for the image ``x: [1, 3, H, W]`` in [0, 1]."""
        with self.rmodel.control([adapter]):
            out = self.model.generate(**ex.prompt, pixel_values=self.pixel_values(x, ex, 1),
                                      max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=self.pad)
        new = out[0, ex.prompt["input_ids"].shape[1]:]
        return self.tokenizer.decode(new, skip_special_tokens=True).strip()


def attack_example(target: LvlmTarget, ex: Example, adapter: Adapter | None, eps: float, attack: str,
                   steps: int, seed: int = 0) -> torch.Tensor:
    """Adversarial image ``[1, 3, H, W]`` in [0, 1] maximising ``target.loss`` (``eps`` in 1/255)."""
    loss_fn = target.loss_fn(ex, adapter)
    if attack == "apgd":
        return apgd_loss(loss_fn, ex.image, eps, steps=steps, seed=seed)
    if attack == "pgd":
        gen = torch.Generator(device=ex.image.device).manual_seed(seed)
        return pgd(loss_fn, ex.image, eps, steps=steps, generator=gen)
    raise ValueError(f"attack must be one of {', '.join(LVLM_ATTACKS)}, got {attack!r}")
