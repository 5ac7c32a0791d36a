"""The adapter store checks every adapter whole before storing it: layout, values, sigma, weight digest."""

from __future__ import annotations

import dataclasses
import logging

import pytest
import torch

from adapters import RAdaptModel, adapter_to_bytes
from adapters.method.anchor import Adapter
from adapters.method.config import AdapterConfig, Fingerprint
from service.adapters_manager import AdapterStore
from service.errors import BadRequest
from service.metrics import Metrics

QWEN_FP = Fingerprint("qwen2_vl", 32, 14, 224, 256, variable_resolution=True)


def store(fp: Fingerprint, **kw) -> AdapterStore:
    return AdapterStore("m", fp, torch.device("cpu"), torch.float32, Metrics(), **kw)


@pytest.mark.unit
@pytest.mark.parametrize("grid, rows", [("0,16", 256), ("-16,-16", 256), ("16,16", 100), ("", 256)])
def test_qwen_adapters_that_cannot_run_are_refused(grid, rows):
    """Finding 2: a negative or zero grid loaded and then failed every batch it joined."""
    adapter = Adapter(AdapterConfig(fingerprint=QWEN_FP, method="manual", extra={"grid": grid}),
                      torch.randn(rows, 32))
    s = store(QWEN_FP)
    with pytest.raises(BadRequest) as err:
        s.put("bad", adapter)
    assert err.value.code == "invalid_adapter" and "bad" not in s.snapshot()


@pytest.mark.unit
def test_non_finite_anchor_objects_are_refused():
    fp = Fingerprint("clip_vision_model", 32, 8, 32, 17)
    anchor = torch.zeros(17, 32)
    anchor[3, 3] = float("inf")
    with pytest.raises(BadRequest, match="NaN or infinite"):
        store(fp).put("inf", Adapter(AdapterConfig(fingerprint=fp), anchor))


def other_checkpoint(tiny_clip) -> RAdaptModel:
    """Same architecture as builtin:tiny-clip, other weights (as FARE is to CLIP)."""
    from transformers import CLIPModel

    torch.manual_seed(11)
    return RAdaptModel(CLIPModel(tiny_clip.model.config).eval())


@pytest.mark.integration
def test_weight_digest_mismatch_is_refused_or_allowed_with_a_warning(fresh_clip, tiny_clip, caplog):
    """Finding 3: a white anchor of another checkpoint loaded silently."""
    served = RAdaptModel.from_loaded(fresh_clip)
    foreign = other_checkpoint(tiny_clip)
    alien = foreign.build_adapter(foreign.white_anchor(), method="white")
    own = served.build_adapter(served.white_anchor(), method="white")
    s = store(served.fingerprint)
    s.put("own", own)
    with pytest.raises(BadRequest) as err:
        s.put("alien", alien)
    assert err.value.code == "adapter_weights_mismatch" and "checkpoint" in err.value.message
    with caplog.at_level(logging.WARNING, logger="service.adapters_manager"):
        assert s.put("alien", alien, allow_weight_mismatch=True) == "load"
    assert "allow_weight_mismatch" in caplog.text
    assert store(served.fingerprint, allow_weight_mismatch=True).put("alien", alien) == "load"
    # files from before the digest (no weights) keep loading
    legacy_fp = dataclasses.replace(alien.config.fingerprint, weights="")
    legacy = Adapter(dataclasses.replace(alien.config, fingerprint=legacy_fp), alien.anchor)
    assert s.put("legacy", legacy) == "load"


@pytest.mark.api
@pytest.mark.asyncio(loop_scope="session")
async def test_upload_built_on_another_checkpoint_is_a_400(client, tiny_clip, png):
    foreign = other_checkpoint(tiny_clip)
    data = adapter_to_bytes(foreign.build_adapter(foreign.white_anchor(), method="white"))
    resp = await client.post("/v1/adapters", data={"name": "alien"}, files={"file": ("a", data)})
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "adapter_weights_mismatch", resp.text
    assert (await client.post("/v1/classify", json={"image": png(), "labels": ["a"]})).status_code == 200


@pytest.mark.integration
@pytest.mark.asyncio(loop_scope="session")
async def test_adapters_named_at_start_are_checked_whole(tmp_path, tiny_clip):
    """`--adapter NAME=FILE` goes through the same checks: a file that cannot run stops the start, clearly."""
    from adapters import save_adapter
    from adapters.zoo.loading import ModelLoadError
    from service.engine.engine import Engine
    from tests.service.conftest import clip_settings

    foreign = other_checkpoint(tiny_clip)
    save_adapter(foreign.build_adapter(foreign.white_anchor(), method="white"), tmp_path / "alien.safetensors")
    bad = Adapter(AdapterConfig(fingerprint=foreign.fingerprint), torch.zeros(3, 32))
    (tmp_path / "rows.safetensors").write_bytes(adapter_to_bytes(bad))
    for name, needle in (("rows", "rows"), ("alien", "other weights")):
        engine = Engine(clip_settings(adapters=[f"{name}={tmp_path / (name + '.safetensors')}"], warmup=False))
        # the parse step raises ModelLoadError; the store's own checks a 400 (radapt serve prints either)
        with pytest.raises((ModelLoadError, BadRequest), match=needle):
            await engine.start()
        await engine.stop()
