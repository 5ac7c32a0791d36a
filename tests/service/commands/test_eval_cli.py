import json

import numpy as np
import pytest
import torch
from PIL import Image

from adapters import RAdaptModel, save_adapter
from adapters.acquire import white_adapter
from adapters.imagefolder import load_pixels
from adapters.zeroshot import ZeroShotClassifier, class_embeddings, logit_scale_of
from service.cli import main

pytestmark = pytest.mark.integration

CLASSES = ["boat", "cat", "green", "tree", "zebra"]  # varied predictions on random tiny-clip images


@pytest.fixture()
def dataset(tmp_path, fresh_clip):
    """An ImageFolder labelled with tiny-clip's own standard-mode predictions (clean accuracy 100%).

    Returns (dataset dir, template file, adapter file built for the model).
    """
    rng = np.random.default_rng(0)
    stage = tmp_path / "stage"
    stage.mkdir()
    paths = []
    for i in range(12):  # half flat colours, half noise: both kinds land in several classes
        arr = rng.random((32, 32, 3)) if i % 2 else np.broadcast_to(rng.random((1, 1, 3)), (32, 32, 3))
        paths.append(stage / f"im{i:02d}.png")
        Image.fromarray((arr * 255).astype("uint8")).save(paths[-1])
    ip = fresh_clip.processor.image_processor
    rmodel = RAdaptModel(fresh_clip.model, ip.image_mean, ip.image_std)
    text = class_embeddings(fresh_clip.model, fresh_clip.processor.tokenizer, CLASSES, ["{}"])
    with torch.no_grad():
        pred = ZeroShotClassifier(rmodel, text, logit_scale_of(fresh_clip.model))(load_pixels(paths, ip))
    root = tmp_path / "data"
    for c in CLASSES:
        (root / c).mkdir(parents=True)
    for p, k in zip(paths, pred.argmax(-1).tolist(), strict=True):
        p.rename(root / CLASSES[k] / p.name)
    assert len(set(pred.argmax(-1).tolist())) >= 2
    templates = tmp_path / "templates.txt"
    templates.write_text("{}\n")
    adapter = save_adapter(white_adapter(rmodel, sigma=0.5, alpha=0.25), tmp_path / "soft.safetensors")
    return root, templates, adapter


def test_radapt_eval_end_to_end(dataset, tmp_path, capsys):
    root, templates, adapter = dataset
    out = tmp_path / "report"
    argv = ["eval", "--model", "builtin:tiny-clip", "--device", "cpu", "--dataset", str(root),
            "--templates", str(templates), "--adapter", str(adapter), "--eps", "1,8",
            "--attack", "apgd-ce,apgd-t", "--steps", "5", "--n", "12", "--out", str(out),
            "--sweep", "sigma=0.5", "alpha=0.25,0.75", "--no-progress"]
    assert main(argv) == 0
    data = json.loads((out / "results.json").read_text())
    by_name = {c["name"]: c for c in data["configurations"]}
    assert list(by_name) == ["standard", "white sigma=1 alpha=0.5", "soft (white)",
                             "white sigma=0.5 alpha=0.25", "white sigma=0.5 alpha=0.75"]
    standard = by_name["standard"]
    assert standard["clean"] == 1.0 and standard["n"] == 12
    assert standard["robust"]["8"] < standard["clean"]  # the attack really lowers accuracy
    assert standard["robust"]["8"] <= standard["robust"]["1"]
    # the saved adapter and the equal sweep point are the same configuration: same numbers
    assert by_name["soft (white)"]["robust"] == by_name["white sigma=0.5 alpha=0.25"]["robust"]
    assert data["settings"]["attacks"] == ["apgd-ce", "apgd-t"] and data["settings"]["eps"] == [1.0, 8.0]
    assert data["versions"]["pyautoattack"]
    table = (out / "results.md").read_text()
    assert "| standard | 100.0 |" in table and table in capsys.readouterr().out
    for name in ("accuracy.png", "tradeoff.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("extra, message", [
    (["--attack", "square"], "--attack takes"),
    (["--eps", "1,x"], "--eps must be"),
    (["--sweep", "beta=1"], "--sweep takes"),
])
def test_radapt_eval_usage_errors(dataset, tmp_path, capsys, extra, message):
    root, _, _ = dataset
    argv = ["eval", "--model", "builtin:tiny-clip", "--device", "cpu", "--dataset", str(root),
            "--out", str(tmp_path / "o")] + extra
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_radapt_eval_needs_four_classes_for_apgd_t(tmp_path, capsys):
    for c in ("a", "b", "c"):
        (tmp_path / "d" / c).mkdir(parents=True)
        Image.new("RGB", (32, 32), (10, 20, 30)).save(tmp_path / "d" / c / "x.png")
    assert main(["eval", "--model", "builtin:tiny-clip", "--dataset", str(tmp_path / "d"),
                 "--out", str(tmp_path / "o")]) == 2
    assert "at least 4 classes" in capsys.readouterr().err
