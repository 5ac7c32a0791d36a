"""The engine without HTTP: task calls, adapters named in the settings, load failures."""

from __future__ import annotations

import pytest

from adapters import Fingerprint, save_adapter
from adapters.method.anchor import Adapter
from adapters.method.config import AdapterConfig
from adapters.zoo.loading import ModelLoadError
from service.engine.engine import Engine
from service.settings import load_settings

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]


async def test_engine_runs_tasks_with_configured_adapters(tmp_path, images, clip_engine):
    rmodel = clip_engine.models["builtin:tiny-clip"].rmodel
    save_adapter(rmodel.build_adapter(rmodel.white_anchor(), method="manual", sigma=2.0, alpha=0.9),
                 tmp_path / "strong.safetensors")
    settings = load_settings(models=["builtin:tiny-clip"], device="cpu",
                             adapters=[f"strong={tmp_path / 'strong.safetensors'}"], sigma=0.5, alpha=0.1)
    async with Engine(settings) as engine:
        served = engine.models["builtin:tiny-clip"]
        assert {i.name: (i.sigma, i.alpha) for i in served.adapters.infos()} == {
            "default": (0.5, 0.1), "strong": (2.0, 0.9)}
        img = images.image_of(3)
        std = await engine.classify(img, ["cat", "dog"], robust=False)
        strong = await engine.classify(img, ["cat", "dog"], adapter="strong")
        assert (strong.robust, strong.adapter) == (True, "strong") and std.value != strong.value
        vecs = await engine.embed(["a", "b", "c"])
        assert len(vecs.value) == 3 and vecs.usage > 3 and not (vecs.value[0] == vecs.value[1]).all()


async def test_an_adapter_that_fits_no_model_stops_the_start(tmp_path):
    fp = Fingerprint("clip_vision_model", 768, 32, 224, 50)
    import torch

    save_adapter(Adapter(AdapterConfig(fingerprint=fp), torch.zeros(50, 768)), tmp_path / "vitb.safetensors")
    settings = load_settings(models=["builtin:tiny-clip"], device="cpu",
                             adapters=[f"b={tmp_path / 'vitb.safetensors'}"])
    engine = Engine(settings)
    with pytest.raises(ModelLoadError, match="fits none"):
        await engine.start()
    assert engine.state == "failed" and "fits none" in engine.error
    await engine.stop()


async def test_a_builtin_models_swept_defaults_make_its_default_adapter_unless_told():
    """builtin:fashion-clip's sweep chose sigma 0.5, alpha 0 (docs/fashion-clip.md); the library defaults
    (sigma 1, alpha 0.5) take it from 82% to 23% clean, so its `default` adapter must not use them."""
    for given, expected in [({}, (0.5, 0.0)), ({"sigma": 1.5}, (1.5, 0.0)), ({"alpha": 0.3}, (0.5, 0.3))]:
        settings = load_settings(models=["builtin:fashion-clip"], device="cpu", dtype="float32", warmup=False,
                                 **given)
        async with Engine(settings) as engine:
            info = engine.models["builtin:fashion-clip"].adapters.infos()[0]
            assert (info.name, info.sigma, info.alpha) == ("default", *expected)
