"""Zero-shot CLIP classification under the attack threat model.

Threat model (the robust-CLIP community's protocol): images in [0, 1] at the encoder's input
resolution, normalisation *inside* the model, logits ``logit_scale * norm(img) @ norm(text).T``.
The classifier runs the vision tower under ``rmodel.control(...)``, so R-Adapt's filter and anchor
sit inside the forward pass that attacks differentiate.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from adapters.method.anchor import Adapter
from adapters.method.model import RAdaptModel

# The 7 templates OpenAI's CLIP notebook selected from its 80 ImageNet prompts, plus the plain one.
TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "itap of a {}.",
    "a bad photo of the {}.",
    "a origami {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
)


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std`` on ``x: [B, 3, H, W]``; resizes nothing."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)


def image_embeddings(model: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    """Image embeddings ``[B, D]`` of normalised ``pixel_values: [B, 3, H, W]``.

    CLIP: the projected embedding (``get_image_features``); other families (LLaVA): the vision
    tower's pooled output.
    """
    get = getattr(model, "get_image_features", None)
    if get is not None and hasattr(model, "visual_projection"):
        return get(pixel_values=pixel_values).pooler_output
    tower = getattr(model, "vision_tower", None) or getattr(getattr(model, "model", None), "vision_tower", None)
    if tower is None:
        raise TypeError(f"{type(model).__name__} has no CLIP image encoder")
    return tower(pixel_values=pixel_values).pooler_output


@torch.no_grad()
def class_embeddings(model: nn.Module, tokenizer: Any, classnames: Sequence[str],
                     templates: Sequence[str] = TEMPLATES) -> torch.Tensor:
    """One unit-norm text embedding per class ``[C, D]``: the normalised mean over templates."""
    if not classnames:
        raise ValueError("zero-shot classification needs at least one class name")
    for t in templates:
        if "{}" not in t:
            raise ValueError(f"template {t!r} has no '{{}}' for the class name")
    device = next(model.parameters()).device
    rows = []
    for name in classnames:
        prompts = [t.format(name.replace("_", " ")) for t in templates]
        tokens = tokenizer(prompts, padding=True, truncation=True, return_tensors="pt").to(device)
        emb = model.get_text_features(input_ids=tokens["input_ids"],
                                      attention_mask=tokens["attention_mask"]).pooler_output
        rows.append(F.normalize(F.normalize(emb.float(), dim=-1).mean(0), dim=-1))
    return torch.stack(rows)


class ZeroShotClassifier(nn.Module):
    """``images: [B, 3, H, W]`` in [0, 1] -> zero-shot logits ``[B, C]``.

    ``adapter`` (or ``None`` = standard mode) applies to every image of each batch, whatever its
    size, so attacks that re-batch subsets (APGD) keep attacking the same configuration.
    """

    def __init__(self, rmodel: RAdaptModel, text: torch.Tensor, logit_scale: float,
                 adapter: Adapter | None = None) -> None:
        super().__init__()
        self.rmodel = rmodel
        self.normalize = Normalize(rmodel.family.image_mean, rmodel.family.image_std)
        self.register_buffer("text", F.normalize(text.detach().float(), dim=-1))
        self.logit_scale = float(logit_scale)
        self.adapter = adapter

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        pixels = self.normalize(images)
        samples = None if self.adapter is None else [self.adapter] * images.shape[0]
        with self.rmodel.control(samples):
            emb = image_embeddings(self.rmodel.model, pixels)
        return self.logit_scale * F.normalize(emb.float(), dim=-1) @ self.text.T


def logit_scale_of(model: nn.Module) -> float:
    """The model's learned temperature (100 for OpenAI CLIP); 100 when it has none."""
    scale = getattr(model, "logit_scale", None)
    return 100.0 if scale is None else float(scale.detach().exp())
