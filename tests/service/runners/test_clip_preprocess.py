"""The fast CLIP preprocessing equals the transformers processor exactly; the label LRU is bounded."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from adapters.zoo.clip import clip_processor
from service.runners.clip import LabelCache
from service.runners.preprocess import FastClipPreprocessor, ProcessorPreprocessor, image_preprocessor

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("size", [32, 224])
def test_fast_path_equals_the_processor(size):
    ip = clip_processor(size).image_processor
    fast, slow = image_preprocessor(ip), ProcessorPreprocessor(ip)
    assert isinstance(fast, FastClipPreprocessor)
    rs = np.random.RandomState(0)
    for h, w in [(300, 400), (400, 300), (size, size), (33, 97), (2, 300), (300, 2), (17, 5), (641, 479)]:
        img = Image.fromarray(rs.randint(0, 256, (h, w, 3), dtype=np.uint8))
        a, b = fast(img), slow(img)
        assert a.shape == b.shape == (3, size, size) and a.dtype == b.dtype == torch.float32
        assert torch.equal(a, b), (h, w)
    grey = Image.fromarray(rs.randint(0, 256, (50, 60), dtype=np.uint8)).convert("L")
    assert torch.equal(fast(grey), slow(grey.convert("RGB")))


@pytest.mark.parametrize("size", [(1, 500), (500, 1), (2, 1000)])
def test_both_paths_refuse_a_resize_past_the_bound_before_resizing(size, monkeypatch):
    """Finding 1: at 224 px a 1x500 strip would become 112000x224 (25 Mpx); refused before any resize."""
    from service.errors import BadRequest

    ip = clip_processor(224).image_processor
    img = Image.new("RGB", size)
    resized: list[tuple[int, int]] = []
    original = Image.Image.resize
    monkeypatch.setattr(Image.Image, "resize", lambda self, *a, **k: resized.append(a[0]) or original(self, *a, **k))
    for pre in (image_preprocessor(ip), ProcessorPreprocessor(ip)):
        with pytest.raises(BadRequest) as err:
            pre(img)
        assert err.value.code == "image_aspect_ratio"
    assert resized == []


def test_unrecognised_processors_fall_back():
    ip = clip_processor(32).image_processor
    ip.do_center_crop = False
    assert isinstance(image_preprocessor(ip), ProcessorPreprocessor)


def test_label_cache_is_a_bounded_lru():
    cache = LabelCache(2)
    cache.put("a", torch.zeros(1))
    cache.put("b", torch.ones(1))
    assert cache.get("a") is not None  # a is now the most recent
    cache.put("c", torch.ones(1))
    assert cache.get("b") is None and cache.get("a") is not None and len(cache) == 2
    off = LabelCache(0)
    off.put("a", torch.zeros(1))
    assert off.get("a") is None
