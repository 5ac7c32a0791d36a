import numpy as np
import pytest
import torch
from PIL import Image

from adapters import RAdaptModel, load_adapter
from adapters.lab.imagefolder import list_images, sample_paths
from adapters.lab.train import TrainSettings, attacked_fare_loss, train_anchor
from adapters.method.acquire import white_adapter
from adapters.method.config import AdapterError
from service.cli import main


def inject(loaded) -> RAdaptModel:
    ip = loaded.processor.image_processor
    return RAdaptModel(loaded.model, ip.image_mean, ip.image_std)


def synthetic(n: int, seed: int) -> torch.Tensor:
    """Smooth random images ``[n, 3, 32, 32]`` in [0, 1]: 4x4 noise upsampled bilinearly."""
    low = torch.rand(n, 3, 4, 4, generator=torch.Generator().manual_seed(seed))
    return torch.nn.functional.interpolate(low, size=32, mode="bilinear", align_corners=False).clamp(0, 1)


@pytest.mark.unit
def test_data_anchor_beats_the_white_anchor_on_held_out_images(fresh_clip):
    rmodel = inject(fresh_clip)
    train, held_out = synthetic(48, seed=0), synthetic(24, seed=1)
    settings = TrainSettings(eps=4, steps=3, epochs=2, batch_size=16, lr=3e-2, seed=0)
    white = white_adapter(rmodel)
    data = train_anchor(rmodel, train, settings, progress=False)
    assert data.config.method == "data" and data.anchor.shape == white.anchor.shape
    assert not torch.allclose(data.anchor, white.anchor, atol=1e-3)
    white_loss = attacked_fare_loss(rmodel, white, held_out, settings)
    data_loss = attacked_fare_loss(rmodel, data, held_out, settings)
    assert data_loss < 0.9 * white_loss, (data_loss, white_loss)


@pytest.mark.unit
def test_training_is_deterministic_and_records_its_settings(fresh_clip):
    rmodel = inject(fresh_clip)
    x = synthetic(8, seed=2)
    settings = TrainSettings(steps=1, epochs=1, batch_size=4, lr=1e-2, seed=3)
    a, b = (train_anchor(rmodel, x, settings, sigma=0.5, alpha=0.25, progress=False) for _ in range(2))
    other_seed = TrainSettings(steps=1, epochs=1, batch_size=4, lr=1e-2, seed=4)
    c = train_anchor(rmodel, x, other_seed, progress=False)
    assert torch.equal(a.anchor, b.anchor) and not torch.equal(a.anchor, c.anchor)
    assert (a.config.sigma, a.config.alpha) == (0.5, 0.25)
    assert a.config.extra["train.seed"] == "3" and a.config.extra["train.eps"] == "4.0"
    assert a.config.extra["train.images"] == "8" and float(a.config.extra["train.loss_last_epoch"]) > 0


@pytest.mark.unit
def test_train_alpha_moves_alpha_inside_the_unit_interval(fresh_clip):
    rmodel = inject(fresh_clip)
    settings = TrainSettings(steps=1, epochs=2, batch_size=8, lr=0.2, train_alpha=True)
    adapter = train_anchor(rmodel, synthetic(8, seed=5), settings, alpha=0.5, progress=False)
    assert 0.0 < adapter.config.alpha < 1.0 and abs(adapter.config.alpha - 0.5) > 1e-3
    # the hook that trains alpha is gone afterwards: standard mode is the plain model again
    px = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        with rmodel.control([None]):
            controlled = fresh_clip.model.get_image_features(pixel_values=px).pooler_output
        plain = fresh_clip.model.get_image_features(pixel_values=px).pooler_output
    assert torch.equal(controlled, plain)


def write_images(folder, count: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for i in range(count):
        sub = folder / f"part{i % 3}" / ("deep" if i % 2 else "")  # nested: read recursively
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray((rng.random((40, 48, 3)) * 255).astype("uint8")).save(sub / f"im{i}.png")
    (folder / "notes.txt").write_text("not an image")


@pytest.mark.unit
def test_sample_paths_is_deterministic_and_bounded(tmp_path):
    write_images(tmp_path, 6, seed=0)
    paths = list_images(tmp_path)
    assert len(paths) == 6
    assert sample_paths(paths, 4, seed=1) == sample_paths(paths, 4, seed=1)
    assert len(sample_paths(paths, 4, seed=1)) == 4 and sample_paths(paths, 10, seed=1) == paths


@pytest.mark.integration
def test_radapt_adapter_build_method_data(tmp_path, capsys):
    images = tmp_path / "unlabelled"
    write_images(images, 7, seed=1)
    out = tmp_path / "data.safetensors"
    argv = ["adapter", "build", "--method", "data", "--model", "builtin:tiny-clip", "--device", "cpu",
            "--images", str(images), "--n", "6", "--epochs", "1", "--steps", "1", "--batch-size", "3",
            "--seed", "2", "--alpha", "0.4", "--out", str(out)]
    assert main(argv) == 0
    adapter = load_adapter(out)
    assert adapter.config.method == "data" and adapter.config.alpha == 0.4
    assert adapter.config.extra["train.images"] == "6" and adapter.config.extra["train.steps"] == "1"
    assert adapter.config.extra["train.folder"] == str(images.resolve())
    assert adapter.config.source == "data:builtin:tiny-clip"
    capsys.readouterr()
    assert main(["adapter", "build", "--method", "data", "--model", "builtin:tiny-clip", "--device", "cpu",
                 "--out", str(tmp_path / "x.safetensors")]) == 2
    assert "--images" in capsys.readouterr().err


@pytest.mark.unit
def test_refuses_an_empty_batch(fresh_clip):
    with pytest.raises(AdapterError):
        train_anchor(inject(fresh_clip), torch.zeros(0, 3, 32, 32), progress=False)


@pytest.mark.integration
def test_llava_anchor_trains_on_the_patch_tokens_its_language_model_reads(fresh_clip):
    from adapters.lab.train import FareObjective
    from adapters.zoo.loading import load_model

    loaded = load_model("builtin:tiny-llava", device="cpu", dtype="float32")
    rmodel = RAdaptModel.from_loaded(loaded)
    objective = FareObjective(rmodel)
    assert objective.features == "lvlm" and FareObjective(inject(fresh_clip)).features == "pooled"
    x = synthetic(2, seed=6)
    seen = []
    projector = loaded.model.model.multi_modal_projector
    handle = projector.register_forward_hook(lambda m, args, out: seen.append(args[0]))
    try:
        with torch.no_grad():
            loaded.model.model.get_image_features(pixel_values=objective.normalize(x))
            tokens = objective.embed(x, None)
    finally:
        handle.remove()
    assert tokens.shape == (2, 16, 32)  # 16 patches (CLS dropped) of the layer -2 output
    torch.testing.assert_close(tokens, seen[0])
    settings = TrainSettings(steps=1, epochs=1, batch_size=2, lr=1e-2)
    trained = train_anchor(rmodel, x, settings, progress=False)
    pooled = train_anchor(rmodel, x, TrainSettings(steps=1, epochs=1, batch_size=2, lr=1e-2, features="pooled"),
                          progress=False)
    assert trained.config.extra["train.features"] == "lvlm" and pooled.config.extra["train.features"] == "pooled"
    assert not torch.equal(trained.anchor, pooled.anchor)
    with pytest.raises(AdapterError):
        FareObjective(inject(load_model("builtin:tiny-clip", device="cpu", dtype="float32")), "lvlm")
