import json

import numpy as np
import pytest
import torch
from PIL import Image

from adapters import RAdaptModel
from adapters.lab.evaluate import EvalConfig, evaluate, sweep_configs
from adapters.lab.imagefolder import ImageFolder
from adapters.lab.report import write_reports
from adapters.lab.zeroshot import ZeroShotClassifier, class_embeddings, logit_scale_of
from adapters.method.acquire import white_adapter

pytestmark = pytest.mark.unit

CLASSES = ["boat", "cat", "green", "tree", "zebra"]


def setup(loaded, n: int = 10):
    """Injected model, class embeddings, and images labelled with the standard-mode prediction."""
    ip = loaded.processor.image_processor
    rmodel = RAdaptModel(loaded.model, ip.image_mean, ip.image_std)
    text = class_embeddings(loaded.model, loaded.processor.tokenizer, CLASSES, ["{}"])
    scale = logit_scale_of(loaded.model)
    x = torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = ZeroShotClassifier(rmodel, text, scale)(x).argmax(-1)
    return rmodel, text, scale, x, y


def test_attack_lowers_standard_accuracy_and_reports_are_written(fresh_clip, tmp_path):
    rmodel, text, scale, x, y = setup(fresh_clip)
    assert len(set(y.tolist())) >= 2  # labels vary: accuracy is not a constant-class artefact
    configs = [EvalConfig("standard"), EvalConfig("white", white_adapter(rmodel))]
    results = evaluate(rmodel, text, scale, x, y, configs, eps=[1, 8], attacks=["pgd"], steps=5,
                       batch_size=4, progress=False)
    standard, white = results
    assert standard.clean == 1.0 and standard.n == 10
    assert standard.robust[8] < 0.5 and standard.robust[8] <= standard.robust[1] <= standard.clean
    assert white.clean != standard.clean or white.robust != standard.robust  # the adapter changed something
    assert standard.after_attack[8]["pgd"] == standard.robust[8]

    settings = {"model": "builtin:tiny-clip", "attacks": ["pgd"], "eps": [1, 8]}
    files = write_reports(results[:1], settings, tmp_path / "out", sweep=results[1:])
    data = json.loads(files["json"].read_text())
    assert [c["name"] for c in data["configurations"]] == ["standard", "white"]
    assert data["configurations"][0]["robust"]["8"] == standard.robust[8]
    assert data["versions"]["torch"] == torch.__version__
    table = files["markdown"].read_text()
    assert "| standard | 100.0 |" in table and "eps 8/255" in table
    for key in ("plot", "tradeoff"):
        assert files[key].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluation_attacks_the_defended_forward_pass(fresh_clip, monkeypatch):
    """Every attack step on a robust configuration runs the filter and the anchor with gradients on."""
    rmodel, text, scale, x, _ = setup(fresh_clip, n=4)
    white = white_adapter(rmodel)
    with torch.no_grad():  # labels the defended model gets right, so every sample is attacked
        y = ZeroShotClassifier(rmodel, text, scale, white)(x).argmax(-1)
    family = rmodel.family
    seen = {"filter": 0, "anchor": 0}

    def spy(kind, fn, tensor_arg):
        def wrapped(*args):
            t = args[tensor_arg]
            if torch.is_grad_enabled() and t.requires_grad:
                seen[kind] += 1
            return fn(*args)
        return wrapped

    monkeypatch.setattr(family, "filtered_forward", spy("filter", family.filtered_forward, 1))
    monkeypatch.setattr(family, "apply_anchor", spy("anchor", family.apply_anchor, 0))
    evaluate(rmodel, text, scale, x, y, [EvalConfig("standard")], eps=[8], attacks=["pgd"], steps=3,
             progress=False)
    assert seen == {"filter": 0, "anchor": 0}  # standard mode: neither runs
    evaluate(rmodel, text, scale, x, y, [EvalConfig("white", white)], eps=[8], attacks=["pgd"], steps=3,
             progress=False)
    assert seen["filter"] >= 3 and seen["anchor"] >= 3  # one per PGD step at least


def test_sweep_configs_cover_the_grid(fresh_clip):
    ip = fresh_clip.processor.image_processor
    white = white_adapter(RAdaptModel(fresh_clip.model, ip.image_mean, ip.image_std))
    configs = sweep_configs(white, [0.5, 2.0], [0.25, 0.75])
    assert [(c.adapter.config.sigma, c.adapter.config.alpha) for c in configs] == [
        (0.5, 0.25), (0.5, 0.75), (2.0, 0.25), (2.0, 0.75)]
    assert all(c.adapter.anchor is white.anchor for c in configs)
    assert configs[0].name == "white sigma=0.5 alpha=0.25"


def test_evaluate_rejects_unknown_attacks(fresh_clip):
    rmodel, text, scale, x, y = setup(fresh_clip, n=2)
    with pytest.raises(ValueError, match="attacks must be among"):
        evaluate(rmodel, text, scale, x, y, [EvalConfig("standard")], eps=[1], attacks=["square"])


def test_imagefolder_scan_and_balanced_subset(tmp_path):
    rng = np.random.default_rng(0)
    for cls, count in (("b", 4), ("a", 2)):
        (tmp_path / cls / "sub").mkdir(parents=True)
        for i in range(count):
            pixels = (rng.random((8, 8, 3)) * 255).astype("uint8")
            Image.fromarray(pixels).save(tmp_path / cls / "sub" / f"{i}.png")
    (tmp_path / "empty").mkdir()
    ds = ImageFolder.scan(tmp_path)
    assert ds.classes == ("a", "b", "empty") and len(ds.samples) == 6
    picked = ds.subset(4, seed=0)
    assert sorted(c for _, c in picked) == [0, 0, 1, 1] and picked == ds.subset(4, seed=0)
    with pytest.raises(ValueError, match="two class subfolders"):
        ImageFolder.scan(tmp_path / "a")
