"""CLIP checkpoints built offline: a tiny one for tests, a full-size random ViT-B/32 for speed."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import CLIPConfig, CLIPModel, CLIPProcessor, CLIPTokenizer
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from adapters.method.clip import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from adapters.zoo.tokenizers import clip_vocab_and_merges


def clip_tokenizer(max_length: int = 77) -> CLIPTokenizer:
    vocab, merges = clip_vocab_and_merges()
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=max_length)


def clip_processor(image_size: int, max_length: int = 77, mean: Sequence[float] = OPENAI_CLIP_MEAN,
                   std: Sequence[float] = OPENAI_CLIP_STD) -> CLIPProcessor:
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size},
        image_mean=list(mean), image_std=list(std),
    )
    return CLIPProcessor(image_processor=image_processor, tokenizer=clip_tokenizer(max_length))


def _build(text: dict, vision: dict, projection_dim: int, seed: int) -> tuple[CLIPModel, CLIPProcessor]:
    tokenizer = clip_tokenizer()
    vocab = tokenizer.get_vocab()
    text = dict(text, bos_token_id=vocab["<|startoftext|>"], eos_token_id=vocab["<|endoftext|>"],
                pad_token_id=vocab["<|endoftext|>"], max_position_embeddings=77)
    text.setdefault("vocab_size", len(vocab))
    config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=projection_dim)
    torch.manual_seed(seed)
    model = CLIPModel(config).eval()
    processor = clip_processor(vision["image_size"])
    return model, processor


def tiny_clip() -> tuple[CLIPModel, CLIPProcessor]:
    """32 px images, 8 px patches (17 tokens), width 32, 2 layers per tower: milliseconds on CPU."""
    text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                  image_size=32, patch_size=8)
    return _build(text, vision, projection_dim=16, seed=0)


def clip_vit_b32_random() -> tuple[CLIPModel, CLIPProcessor]:
    """The ViT-B/32 architecture at 224 px (50 tokens) with random weights: real compute, no download."""
    text = dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8,
                vocab_size=49408)
    vision = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                  image_size=224, patch_size=32)
    return _build(text, vision, projection_dim=512, seed=0)
