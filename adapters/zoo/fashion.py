"""``builtin:fashion-clip`` and its robust baselines: a small CLIP trained here on Fashion-MNIST.

The architecture: a ViT vision tower at 28 px with 4 px patches (a 7x7 token grid + CLS = 50
tokens, ViT-B/32's count), width 128, 4 layers; a text tower of width 128, 3 layers, over the
zoo's byte-level BPE tokenizer; 64-d projections. Pixels normalised by Fashion-MNIST's own
mean/std through an ordinary CLIP image processor.

Weights are committed (``weights/*.safetensors``, fp16 on disk, fp32 in memory) so the names
load offline in seconds with no dataset: ``fashion-clip`` (contrastive training, see
``adapters.zoo.fashion_train``), ``fashion-clip-fare`` and ``fashion-clip-tecoa`` (the same
model with the vision tower adversarially fine-tuned, see ``adapters.lab.finetune``; they store only
``vision_model.*`` and ``visual_projection.*`` and take the rest from ``fashion-clip``).
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import CLIPConfig, CLIPModel, CLIPProcessor

from adapters.zoo.clip import clip_processor, clip_tokenizer

WEIGHTS = Path(__file__).with_name("weights")
FASHION_MEAN = (0.2860, 0.2860, 0.2860)  # Fashion-MNIST training split, grey as RGB
FASHION_STD = (0.3530, 0.3530, 0.3530)
IMAGE_SIZE = 28
TEXT = dict(hidden_size=128, intermediate_size=512, num_hidden_layers=3, num_attention_heads=4)
VISION = dict(hidden_size=128, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
              image_size=IMAGE_SIZE, patch_size=4)
PROJECTION_DIM = 64
VISION_PREFIXES = ("vision_model.", "visual_projection.")
VARIANTS = ("fashion-clip", "fashion-clip-fare", "fashion-clip-tecoa")


def weights_path(variant: str) -> Path:
    if variant not in VARIANTS:
        raise KeyError(f"unknown fashion-clip variant {variant!r}; known: {', '.join(VARIANTS)}")
    return WEIGHTS / f"{variant}.safetensors"


def fashion_processor() -> CLIPProcessor:
    return clip_processor(IMAGE_SIZE, mean=FASHION_MEAN, std=FASHION_STD)


def fashion_config() -> CLIPConfig:
    vocab = clip_tokenizer().get_vocab()
    text = dict(TEXT, vocab_size=len(vocab), bos_token_id=vocab["<|startoftext|>"],
                eos_token_id=vocab["<|endoftext|>"], pad_token_id=vocab["<|endoftext|>"],
                max_position_embeddings=77)
    return CLIPConfig(text_config=text, vision_config=dict(VISION), projection_dim=PROJECTION_DIM)


def init_model(seed: int = 0) -> CLIPModel:
    """The untrained architecture, seeded."""
    torch.manual_seed(seed)
    return CLIPModel(fashion_config())


def save_weights(model: CLIPModel, variant: str, vision_only: bool = False) -> Path:
    """Write ``model``'s weights (fp16) for ``variant``; ``vision_only`` keeps the vision tower."""
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()
             if not vision_only or k.startswith(VISION_PREFIXES)}
    path = weights_path(variant)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata={"format": "pt", "variant": variant})
    return path


def load_variant(variant: str = "fashion-clip") -> tuple[CLIPModel, CLIPProcessor]:
    """The committed model ``variant`` in fp32, eval mode, with its processor."""
    model = init_model()
    state = {k: v.float() for k, v in load_file(str(weights_path("fashion-clip"))).items()}
    if variant != "fashion-clip":
        tower = load_file(str(weights_path(variant)))
        if not tower or not all(k.startswith(VISION_PREFIXES) for k in tower):
            raise ValueError(f"{weights_path(variant)} must hold only the vision tower")
        state |= {k: v.float() for k, v in tower.items()}
    model.load_state_dict(state, strict=True)
    return model.eval(), fashion_processor()


def fashion_clip() -> tuple[CLIPModel, CLIPProcessor]:
    return load_variant("fashion-clip")


def fashion_clip_fare() -> tuple[CLIPModel, CLIPProcessor]:
    return load_variant("fashion-clip-fare")


def fashion_clip_tecoa() -> tuple[CLIPModel, CLIPProcessor]:
    return load_variant("fashion-clip-tecoa")
