"""Tiny vision-language checkpoints built offline: LLaVA, Qwen2-VL, Qwen2.5-VL and Qwen3-VL.

Each builder returns ``(model, processor)``: random weights from a fixed seed, a byte-level BPE
tokenizer built locally with the special tokens its processor needs, a chat template, and a
PIL image processor (torchvision is not needed). Sizes are chosen so a full ``generate`` takes
milliseconds on CPU while every piece R-Adapt touches is real:

- LLaVA: a CLIP vision tower at 32 px with 8 px patches (16 patches + CLS), 3 layers, feature
  layer -2 (so block 0 feeds the language model).
- Qwen-VL: 4 px patches, 2x2 merge, temporal patch 2; the image processor resizes each side to
  a multiple of 8 px with an area between 16*16 and 48*48 pixels (a square image gets 4x4 to 12x12
  patches), so differently shaped images give different ``grid_thw``. Qwen2.5-VL uses 16 px
  windows (2x2 merged tokens per window), so its window reordering is not the identity.

``initializer_range`` is larger than the transformers default: with 0.02 a tiny random network's
logits are nearly flat and its greedy output barely depends on the input.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import (
    CLIPVisionConfig,
    GPT2Tokenizer,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
    Qwen2Tokenizer,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen2VLProcessor,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
    Qwen3VLProcessor,
)
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from adapters.method.clip import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from adapters.zoo.tokenizers import COMMON_WORDS, byte_to_unicode, word_merges

SEED = 0
INIT_RANGE = 0.2

# Qwen-VL geometry shared by the three tiny Qwen builders.
QWEN_PATCH = 4
QWEN_MERGE = 2
QWEN_TEMPORAL = 2
QWEN_MIN_PIXELS = 16 * 16
QWEN_MAX_PIXELS = 48 * 48

QWEN_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                 "<|image_pad|>", "<|video_pad|>")
LLAVA_SPECIALS = ("<s>", "</s>", "<pad>", "<image>")

# Qwen's chat layout (<|im_start|>role ... <|im_end|>), images as vision_start/image_pad/vision_end.
QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or content['type'] == 'image_url' %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# LLaVA-1.5's layout: "USER: <image>\n<text> ASSISTANT:".
LLAVA_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'].upper() + ': ' }}"
    "{% if message['content'] is string %}{{ message['content'] + ' ' }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or content['type'] == 'image_url' %}{{ '<image>\n' }}"
    "{% elif content['type'] == 'text' %}{{ content['text'] + ' ' }}{% endif %}"
    "{% endfor %}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)


def byte_level_vocab(specials: tuple[str, ...]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """GPT-2 style vocabulary: every byte, merged common words (bare and space-prefixed), specials last."""
    words = list(COMMON_WORDS) + [" " + w for w in COMMON_WORDS]
    merges = word_merges(words)
    vocab_list = list(byte_to_unicode().values())
    seen = set(vocab_list)
    for a, b in merges:
        if a + b not in seen:
            seen.add(a + b)
            vocab_list.append(a + b)
    vocab_list += list(specials)
    return {tok: i for i, tok in enumerate(vocab_list)}, merges


def qwen_tokenizer() -> Qwen2Tokenizer:
    vocab, merges = byte_level_vocab(QWEN_SPECIALS)
    return Qwen2Tokenizer(
        vocab=vocab, merges=merges, unk_token=None, eos_token="<|im_end|>",
        pad_token="<|endoftext|>", extra_special_tokens=list(QWEN_SPECIALS[1:]), model_max_length=4096,
    )


def llava_tokenizer() -> GPT2Tokenizer:
    vocab, merges = byte_level_vocab(LLAVA_SPECIALS)
    return GPT2Tokenizer(
        vocab=vocab, merges=merges, unk_token="</s>", bos_token="<s>",
        eos_token="</s>", pad_token="<pad>", extra_special_tokens=["<image>"], model_max_length=4096,
        add_bos_token=True,
    )


# stock processor -> the video processor its saved config names
VIDEO_PROCESSOR_TYPES = {"Qwen2VLProcessor": "Qwen2VLVideoProcessor", "Qwen2_5_VLProcessor": "Qwen2VLVideoProcessor",
                         "Qwen3VLProcessor": "Qwen3VLVideoProcessor"}


class _ImageOnly:
    """Mixin for a Qwen-VL processor without its video half.

    transformers' Qwen video processors need torchvision, which this project does not install, and
    ``ProcessorMixin`` refuses a missing sub-processor. Dropping ``video_processor`` from
    ``__init__``'s signature makes the processor image + text only (transformers itself checks
    ``hasattr(self, "video_processor")`` before touching videos). The class keeps the transformers
    class's ``__name__``, so what ``save_pretrained`` writes names the stock class.
    """

    def __init__(self, image_processor: Any = None, tokenizer: Any = None, chat_template: str | None = None,
                 **kwargs: Any) -> None:
        kwargs.pop("video_processor", None)  # present when loaded from a complete folder
        super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)

    def to_dict(self) -> dict[str, Any]:
        """The stock processor's config, video half included, so transformers with torchvision loads it."""
        out = super().to_dict()  # type: ignore[misc]
        ip = self.image_processor  # type: ignore[attr-defined]
        out["video_processor"] = {
            "video_processor_type": VIDEO_PROCESSOR_TYPES[type(self).__name__],
            "patch_size": ip.patch_size, "temporal_patch_size": ip.temporal_patch_size,
            "merge_size": ip.merge_size, "size": dict(ip.size),
            "image_mean": list(ip.image_mean), "image_std": list(ip.image_std),
        }
        return out


def _image_only(base: type) -> type:
    return type(base.__name__, (_ImageOnly, base), {"__module__": __name__, "__doc__": _ImageOnly.__doc__})


ImageOnlyQwen2VLProcessor = _image_only(Qwen2VLProcessor)
ImageOnlyQwen2_5_VLProcessor = _image_only(Qwen2_5_VLProcessor)
ImageOnlyQwen3VLProcessor = _image_only(Qwen3VLProcessor)
# model_type -> processor usable without torchvision (see ``adapters.zoo.loading``)
IMAGE_ONLY_PROCESSORS: dict[str, type] = {
    "qwen2_vl": ImageOnlyQwen2VLProcessor,
    "qwen2_5_vl": ImageOnlyQwen2_5_VLProcessor,
    "qwen3_vl": ImageOnlyQwen3VLProcessor,
}


def qwen_image_processor() -> Qwen2VLImageProcessorPil:
    return Qwen2VLImageProcessorPil(
        min_pixels=QWEN_MIN_PIXELS, max_pixels=QWEN_MAX_PIXELS, patch_size=QWEN_PATCH,
        temporal_patch_size=QWEN_TEMPORAL, merge_size=QWEN_MERGE,
        image_mean=list(OPENAI_CLIP_MEAN), image_std=list(OPENAI_CLIP_STD),
    )


def _qwen_token_ids(tokenizer: Qwen2Tokenizer) -> dict[str, int]:
    ids = tokenizer.convert_tokens_to_ids
    return dict(image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
                vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"))


def _qwen_text(tokenizer: Qwen2Tokenizer, **overrides: Any) -> dict[str, Any]:
    """A 2-layer decoder, width 64, 4 heads (head dim 16, mrope sections 2+3+3 = 16/2)."""
    text = dict(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
        initializer_range=INIT_RANGE, rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                       "mrope_section": [2, 3, 3]},
        bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
    )
    text.update(overrides)
    return text


def _finish(model: Any, tokenizer: Any) -> Any:
    """Eval mode and a generation config that stops at the tokenizer's end of turn."""
    model.eval()
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.do_sample = False
    return model


def tiny_qwen2_vl() -> tuple[Qwen2VLForConditionalGeneration, Qwen2VLProcessor]:
    """Qwen2-VL: vision width 32, 2 blocks, 2 heads, 4 px patches; text width 64, 2 layers."""
    tokenizer = qwen_tokenizer()
    vision = dict(depth=2, embed_dim=32, hidden_size=64, mlp_ratio=2, num_heads=2, patch_size=QWEN_PATCH,
                  spatial_merge_size=QWEN_MERGE, temporal_patch_size=QWEN_TEMPORAL,
                  initializer_range=INIT_RANGE)
    config = Qwen2VLConfig(text_config=_qwen_text(tokenizer), vision_config=vision,
                           **_qwen_token_ids(tokenizer))
    torch.manual_seed(SEED)
    model = _finish(Qwen2VLForConditionalGeneration(config), tokenizer)
    processor = ImageOnlyQwen2VLProcessor(image_processor=qwen_image_processor(), tokenizer=tokenizer,
                                 chat_template=QWEN_CHAT_TEMPLATE)
    return model, processor


def tiny_qwen2_5_vl() -> tuple[Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor]:
    """Qwen2.5-VL: as Qwen2-VL plus windowed attention (16 px windows; block 1 full attention)."""
    tokenizer = qwen_tokenizer()
    vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                  patch_size=QWEN_PATCH, spatial_merge_size=QWEN_MERGE, temporal_patch_size=QWEN_TEMPORAL,
                  window_size=16, fullatt_block_indexes=[1], initializer_range=INIT_RANGE)
    config = Qwen2_5_VLConfig(text_config=_qwen_text(tokenizer), vision_config=vision,
                              **_qwen_token_ids(tokenizer))
    torch.manual_seed(SEED)
    model = _finish(Qwen2_5_VLForConditionalGeneration(config), tokenizer)
    processor = ImageOnlyQwen2_5_VLProcessor(image_processor=qwen_image_processor(), tokenizer=tokenizer,
                                    chat_template=QWEN_CHAT_TEMPLATE)
    return model, processor


def tiny_qwen3_vl() -> tuple[Qwen3VLForConditionalGeneration, Qwen3VLProcessor]:
    """Qwen3-VL: vision width 32, 2 blocks, learned 8x8 position grid, deepstack from block 0."""
    tokenizer = qwen_tokenizer()
    vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                  patch_size=QWEN_PATCH, spatial_merge_size=QWEN_MERGE, temporal_patch_size=QWEN_TEMPORAL,
                  num_position_embeddings=64, deepstack_visual_indexes=[0], initializer_range=INIT_RANGE)
    text = _qwen_text(tokenizer, head_dim=16, rope_parameters={
        "rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3], "mrope_interleaved": True})
    config = Qwen3VLConfig(text_config=text, vision_config=vision, **_qwen_token_ids(tokenizer))
    torch.manual_seed(SEED)
    model = _finish(Qwen3VLForConditionalGeneration(config), tokenizer)
    processor = ImageOnlyQwen3VLProcessor(image_processor=qwen_image_processor(), tokenizer=tokenizer,
                                 chat_template=QWEN_CHAT_TEMPLATE)
    return model, processor


def tiny_llava() -> tuple[LlavaForConditionalGeneration, LlavaProcessor]:
    """LLaVA: CLIP vision tower (32 px, 8 px patches, width 32, 3 layers) + Llama (width 64, 2 layers)."""
    tokenizer = llava_tokenizer()
    ids = tokenizer.convert_tokens_to_ids
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
                              image_size=32, patch_size=8, initializer_range=INIT_RANGE)
    text = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                       initializer_range=INIT_RANGE, bos_token_id=ids("<s>"), eos_token_id=ids("</s>"),
                       pad_token_id=ids("<pad>"))
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_index=ids("<image>"),
                         image_seq_length=16, vision_feature_select_strategy="default", vision_feature_layer=-2)
    torch.manual_seed(SEED)
    model = _finish(LlavaForConditionalGeneration(config), tokenizer)
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
        image_mean=list(OPENAI_CLIP_MEAN), image_std=list(OPENAI_CLIP_STD),
    )
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=8,
                               vision_feature_select_strategy="default", num_additional_image_tokens=1,
                               chat_template=LLAVA_CHAT_TEMPLATE)
    return model, processor


def load_processor(source: str, model_type: str) -> Any:
    """``AutoProcessor.from_pretrained(source)``, or for Qwen-VL without torchvision its image-only twin.

    transformers' Qwen-VL processors load a video processor that needs torchvision; without it the
    image + text processor is built from the same folder (same files, same outputs for images).
    """
    from transformers import AutoProcessor

    try:
        return AutoProcessor.from_pretrained(source)
    except ImportError:
        if model_type not in IMAGE_ONLY_PROCESSORS:
            raise
        return IMAGE_ONLY_PROCESSORS[model_type].from_pretrained(source)
