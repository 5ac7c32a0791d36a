"""Adapters checked whole at load (finding 2) and the weight digest (finding 3)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save as st_save

from adapters import AdapterError, adapter_from_bytes, adapter_to_bytes
from adapters.method import digest
from adapters.method.anchor import Adapter
from adapters.method.config import MAX_SIGMA, AdapterConfig, Fingerprint
from adapters.method.io import check_adapter

pytestmark = pytest.mark.unit

CLIP_FP = Fingerprint("clip_vision_model", 32, 8, 32, 17)
QWEN_FP = Fingerprint("qwen2_vl", 32, 14, 224, 256, variable_resolution=True)


def qwen(grid: str, rows: int = 256) -> Adapter:
    return Adapter(AdapterConfig(fingerprint=QWEN_FP, method="manual", extra={"grid": grid}), torch.randn(rows, 32))


def file_with(meta: dict[str, str], anchor: torch.Tensor | None = None) -> bytes:
    base = {"format_version": "1", "method": "manual", "sigma": "1.0", "alpha": "0.5",
            "fingerprint": CLIP_FP.to_json(), "source": ""}
    return st_save({"anchor": torch.zeros(17, 32) if anchor is None else anchor}, metadata={**base, **meta})


@pytest.mark.parametrize("grid, rows, reason", [
    ("0,16", 0, "positive"), ("-4,-64", 256, "positive"), ("16,-16", 256, "positive"),
    ("16", 256, "grid"), ("a,b", 256, "grid"), ("8,8", 256, "rows"), ("16,16", 255, "rows"),
])
def test_qwen_grids_that_cannot_run_are_refused(grid, rows, reason):
    with pytest.raises(AdapterError, match=reason):
        check_adapter(qwen(grid, rows) if rows else qwen(grid, 1))
    with pytest.raises(AdapterError, match=reason):
        adapter_from_bytes(adapter_to_bytes(qwen(grid, rows) if rows else qwen(grid, 1)))


def test_a_consistent_qwen_adapter_passes():
    check_adapter(qwen("16,16"))
    check_adapter(qwen("8,32"))


@pytest.mark.parametrize("rows", [1, 16, 18, 50])
def test_clip_anchor_rows_must_match_the_token_count(rows):
    bad = Adapter(AdapterConfig(fingerprint=CLIP_FP), torch.zeros(rows, 32))
    with pytest.raises(AdapterError, match="rows"):
        adapter_from_bytes(adapter_to_bytes(bad))


@pytest.mark.parametrize("fingerprint, reason", [
    ('{"architecture": "clip_vision_model", "hidden_size": -32, "patch_size": 8, "image_size": 32, '
     '"num_tokens": 17}', "positive"),
    ('{"architecture": "clip_vision_model", "hidden_size": "32", "patch_size": 8, "image_size": 32, '
     '"num_tokens": 17}', "positive"),
    ('{"architecture": "", "hidden_size": 32, "patch_size": 8, "image_size": 32, "num_tokens": 17}', "architecture"),
    ("[1, 2]", "not valid"),
    ("17", "not valid"),
    ('{"architecture": "clip_vision_model", "hidden_size": 32, "patch_size": 8, "image_size": 32, '
     '"num_tokens": 17, "weights": "v1:####"}', "digest"),
])
def test_every_fingerprint_field_is_checked(fingerprint, reason):
    with pytest.raises(AdapterError, match=reason):
        adapter_from_bytes(file_with({"fingerprint": fingerprint}))


@pytest.mark.parametrize("sigma, reason", [("nan", "sigma"), ("inf", "sigma"), ("-1", "sigma"),
                                           (str(MAX_SIGMA + 0.5), "sigma"), ("6", "too wide")])
def test_sigma_is_bounded_by_the_kernel_and_the_image(sigma, reason):
    """tiny-clip sees 32 px: sigma 6 needs a 37 px kernel, wider than the image."""
    with pytest.raises(AdapterError, match=reason):
        adapter_from_bytes(file_with({"sigma": sigma}))
    assert adapter_from_bytes(file_with({"sigma": "5"})).config.sigma == 5.0


@pytest.mark.parametrize("alpha", ["nan", "-0.1", "1.01", "inf"])
def test_alpha_is_bounded(alpha):
    with pytest.raises(AdapterError, match="alpha"):
        adapter_from_bytes(file_with({"alpha": alpha}))


def test_half_precision_anchor_files_load_as_float32():
    loaded = adapter_from_bytes(file_with({}, torch.ones(17, 32, dtype=torch.float16)))
    assert loaded.anchor.dtype == torch.float32 and loaded.anchor.sum() == 17 * 32


# -- weight digest ---------------------------------------------------------------------------------
def _modules(seed: int, scale: float = 0.0, dtype: torch.dtype = torch.float32) -> list[torch.nn.Module]:
    torch.manual_seed(seed)
    mods = [torch.nn.Conv2d(3, 64, 8, 8), torch.nn.TransformerEncoderLayer(64, 4, 256, batch_first=True)]
    with torch.no_grad():
        torch.manual_seed(seed + 100)
        for m in mods:
            for p in m.parameters():
                p.add_(torch.randn_like(p) * scale * p.square().mean().sqrt())
    return [m.to(dtype) for m in mods]


def test_digest_survives_the_serving_dtype():
    exact = digest.weights_digest(_modules(0))
    for dtype in (torch.bfloat16, torch.float16):
        assert digest.difference(exact, digest.weights_digest(_modules(0, dtype=dtype))) <= digest.TOLERANCE, dtype


@pytest.mark.parametrize("scale", [0.02, 0.2])
def test_digest_tells_another_checkpoint_of_the_same_architecture(scale):
    """A fine-tuned checkpoint (weights moved by 2% or 20% RMS) is not the same weights."""
    exact = digest.weights_digest(_modules(0))
    assert digest.difference(exact, digest.weights_digest(_modules(0, scale))) > digest.TOLERANCE
    assert digest.difference(exact, digest.weights_digest(_modules(1))) > digest.TOLERANCE  # another init


def test_digest_round_trips_and_garbage_is_not_comparable():
    text = digest.weights_digest(_modules(0))
    assert digest.is_valid(text) and digest.difference(text, text) == 0.0
    for junk in ("", "v1:", "v2:" + text[3:], "v1:@@@@", text[:-8]):
        assert not digest.is_valid(junk)
        assert digest.difference(text, junk) == float("inf")


def test_model_fingerprints_carry_the_digest_but_compare_by_architecture(fresh_clip):
    from adapters import RAdaptModel

    rmodel = RAdaptModel.from_loaded(fresh_clip)
    fp = rmodel.fingerprint
    assert digest.is_valid(fp.weights)
    assert fp == Fingerprint("clip_vision_model", 32, 8, 32, 17)  # equality is the architecture
    adapter = rmodel.build_adapter(rmodel.white_anchor())
    assert adapter_from_bytes(adapter_to_bytes(adapter)).config.fingerprint.weights == fp.weights
