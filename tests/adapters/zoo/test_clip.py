"""The builtin CLIP checkpoints are meaningful: texts and images embed differently."""

import subprocess
import sys

import pytest
import torch

from adapters import zoo

pytestmark = pytest.mark.unit


def test_tiny_clip_labels_and_images_embed_differently(tiny_clip):
    tok = tiny_clip.processor.tokenizer
    eos = tiny_clip.model.config.text_config.eos_token_id
    assert eos == tok.convert_tokens_to_ids("<|endoftext|>") and eos < tiny_clip.model.config.text_config.vocab_size
    labels = ["a photo of a cat.", "a photo of a dog.", "a photo of a car.", "a photo of a bird."]
    inputs = tok(labels, padding=True, return_tensors="pt")
    with torch.no_grad():
        text = tiny_clip.model.get_text_features(**inputs).pooler_output
        image = tiny_clip.model.get_image_features(pixel_values=torch.randn(3, 3, 32, 32)).pooler_output
    text = torch.nn.functional.normalize(text, dim=-1)
    cos = text @ text.T
    assert (cos - torch.eye(4)).abs().max() < 0.999  # no two labels embed alike
    assert torch.cdist(image, image).triu(1).max() > 1e-3


def test_export_loads_with_plain_transformers(tmp_path):
    out = zoo.export("builtin:tiny-clip", tmp_path / "tc")
    code = (
        "import sys, torch\n"
        "from transformers import AutoProcessor, CLIPModel\n"
        f"m = CLIPModel.from_pretrained({str(out)!r}); p = AutoProcessor.from_pretrained({str(out)!r})\n"
        "from PIL import Image\n"
        "img = Image.new('RGB', (40, 40), (10, 200, 30))\n"
        "x = p(text=['a cat', 'a dog'], images=img, return_tensors='pt', padding=True)\n"
        "o = m(**x); print(tuple(o.logits_per_image.shape))\n"
        "assert 'adapters' not in sys.modules and 'service' not in sys.modules\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "(1, 2)" in res.stdout


def test_b32_random_has_the_vit_b32_shape():
    from adapters.zoo.clip import clip_vit_b32_random

    model, processor = clip_vit_b32_random()
    v = model.config.vision_config
    assert (v.image_size, v.patch_size, v.hidden_size, v.num_hidden_layers) == (224, 32, 768, 12)
    assert processor.image_processor.crop_size["height"] == 224
    n = sum(p.numel() for p in model.vision_model.parameters())
    assert 85e6 < n < 90e6  # ViT-B/32 vision tower: ~87.8M parameters
