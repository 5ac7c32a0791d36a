import json

import numpy as np
import pytest
import torch
from PIL import Image

from adapters import RAdaptModel, save_adapter
from adapters.lab.imagefolder import load_pixels
from adapters.lab.zeroshot import ZeroShotClassifier, class_embeddings, logit_scale_of
from adapters.method.acquire import white_adapter
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


def lvlm_dataset(folder, model: str, task: str, n: int = 3) -> list[str]:
    """Images whose references are ``model``'s own standard-mode outputs (clean score: the best there is).

    Writes ``folder/captions.json`` or ``folder/vqa.json``; returns those outputs."""
    from adapters.lab.lvlm_attacks import LvlmTarget
    from adapters.lab.lvlm_eval import CAPTION_PROMPT, VQA_PROMPT
    from adapters.zoo.loading import load_model

    loaded = load_model(model, device="cpu", dtype="float32")
    target = LvlmTarget(RAdaptModel.from_loaded(loaded), loaded.processor)
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True, exist_ok=True)
    rows, outputs = [], []
    question = "What is in the picture?"
    prompt = CAPTION_PROMPT if task == "caption" else VQA_PROMPT.replace("{question}", question)
    for i in range(n):
        img = Image.fromarray((rng.random((28 + 6 * i, 36, 3)) * 255).astype("uint8"))
        img.save(folder / f"im{i}.png")
        ex = target.example(img, prompt, ["anything"])
        text = target.generate(ex.image, ex, None, 8)
        assert text.strip(), "the fixture needs a non-empty output"
        outputs.append(text)
        if task == "caption":
            rows.append({"image": f"im{i}.png", "captions": [text, "a photo of something"]})
        else:
            rows.append({"image": f"im{i}.png", "question": question, "answers": [text] * 4 + ["blue"] * 6})
    (folder / ("captions.json" if task == "caption" else "vqa.json")).write_text(json.dumps(rows))
    return outputs


@pytest.mark.parametrize("model, task", [("builtin:tiny-llava", "caption"), ("builtin:tiny-qwen2-vl", "vqa")])
def test_radapt_eval_lvlm_end_to_end(tmp_path, capsys, model, task):
    outputs = lvlm_dataset(tmp_path / "data", model, task)
    out = tmp_path / "report"
    argv = ["eval", "--task", task, "--model", model, "--device", "cpu", "--dataset", str(tmp_path / "data"),
            "--eps", "2,16", "--attack", "apgd,pgd", "--steps", "4", "--max-new-tokens", "8", "--out", str(out),
            "--no-progress"]
    assert main(argv) == 0
    data = json.loads((out / "results.json").read_text())
    by_name = {c["name"]: c for c in data["configurations"]}
    assert list(by_name) == ["standard", "white sigma=1 alpha=0.5"]
    standard = by_name["standard"]
    assert standard["n"] == 3 and standard["clean"] > 0.5  # its own outputs are the references
    assert standard["robust"]["16"] < standard["clean"]  # the attack changes what the model says
    for config in by_name.values():  # the attack raises the reference loss in every configuration
        assert config["attacked_loss"]["16"] > config["clean_loss"]
    assert standard["attacked_loss"]["16"] > standard["clean_loss"] + 1.0
    assert data["settings"]["task"] == task and data["settings"]["attacks"] == ["apgd", "pgd"]
    predictions = json.loads((out / "predictions.json").read_text())
    assert predictions["standard"]["clean"] == outputs
    assert predictions["standard"]["16"] != outputs
    table = (out / "results.md").read_text()
    assert "loss 16/255" in table and table in capsys.readouterr().out
    assert (out / "score.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("extra, message", [
    (["--attack", "apgd-ce"], "--attack takes apgd, pgd"),
    (["--prompt", "no placeholder"], "{question}"),
    (["--model", "builtin:tiny-clip"], "LLaVA or Qwen-VL"),
])
def test_radapt_eval_lvlm_usage_errors(tmp_path, capsys, extra, message):
    (tmp_path / "d").mkdir()
    Image.new("RGB", (32, 32), (10, 20, 30)).save(tmp_path / "d" / "x.png")
    (tmp_path / "d" / "vqa.json").write_text(json.dumps([{"image": "x.png", "question": "q?", "answers": ["a"]}]))
    argv = ["eval", "--task", "vqa", "--model", "builtin:tiny-qwen2-vl", "--device", "cpu",
            "--dataset", str(tmp_path / "d"), "--out", str(tmp_path / "o"), "--no-progress"]
    assert main(argv + extra) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_radapt_eval_lvlm_dataset_errors(tmp_path, capsys):
    (tmp_path / "captions.json").write_text(json.dumps([{"image": "missing.png", "captions": ["a"]}]))
    argv = ["eval", "--task", "caption", "--model", "builtin:tiny-llava", "--dataset", str(tmp_path),
            "--out", str(tmp_path / "o")]
    assert main(argv) == 2 and "does not exist" in capsys.readouterr().err
    (tmp_path / "captions.json").write_text(json.dumps([{"image": "missing.png"}]))
    assert main(argv) == 2 and '"captions"' in capsys.readouterr().err
    assert main(argv[:2] + ["vqa"] + argv[3:]) == 2 and "vqa.json" in capsys.readouterr().err
