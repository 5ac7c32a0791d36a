"""The builtin VLMs (tiny LLaVA, Qwen2-VL, Qwen2.5-VL, Qwen3-VL) are deterministic, meaningful, exportable."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from adapters import zoo
from adapters.zoo import vlm

pytestmark = pytest.mark.unit

BUILDERS = {"tiny-llava": "tiny_llava", "tiny-qwen2-vl": "tiny_qwen2_vl", "tiny-qwen2.5-vl": "tiny_qwen2_5_vl",
            "tiny-qwen3-vl": "tiny_qwen3_vl"}
MODEL_CLASSES = {"tiny-llava": "LlavaForConditionalGeneration", "tiny-qwen2-vl": "Qwen2VLForConditionalGeneration",
                 "tiny-qwen2.5-vl": "Qwen2_5_VLForConditionalGeneration",
                 "tiny-qwen3-vl": "Qwen3VLForConditionalGeneration"}
QWEN = [n for n in BUILDERS if n != "tiny-llava"]


def image(seed: int, size: tuple[int, int] = (32, 32)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8))


def chat(text: str) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]


def vision_features(model, inputs) -> torch.Tensor:
    kwargs = {"pixel_values": inputs["pixel_values"]}
    if "image_grid_thw" in inputs:
        kwargs["image_grid_thw"] = inputs["image_grid_thw"]
    return torch.cat(list(model.model.get_image_features(**kwargs).pooler_output))


def test_registry_names_every_builder():
    for name in BUILDERS:
        assert zoo.spec_for(f"builtin:{name}").name == name


@pytest.mark.parametrize("name", BUILDERS)
def test_builders_are_deterministic_and_tiny(name):
    a, _ = getattr(vlm, BUILDERS[name])()
    b, _ = getattr(vlm, BUILDERS[name])()
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert sum(p.numel() for p in a.parameters()) < 1_000_000


@pytest.mark.parametrize("name", BUILDERS)
def test_generation_varies_with_image_and_prompt(name):
    model, proc = getattr(vlm, BUILDERS[name])()
    outs, feats = {}, {}
    for prompt in ("what is this", "describe the color"):
        text = proc.apply_chat_template(chat(prompt), add_generation_prompt=True)
        for seed in (0, 1):
            inputs = proc(text=[text], images=[image(seed)], return_tensors="pt")
            with torch.no_grad():
                out = model.generate(**inputs, max_new_tokens=6, do_sample=False)
                feats[prompt, seed] = vision_features(model, inputs)
            outs[prompt, seed] = out[0, inputs["input_ids"].shape[1]:].tolist()
            assert len(outs[prompt, seed]) >= 1
    assert outs["what is this", 0] != outs["what is this", 1]  # the image matters
    assert outs["what is this", 0] != outs["describe the color", 0]  # the prompt matters
    assert (feats["what is this", 0] - feats["what is this", 1]).abs().max() > 1e-2
    assert torch.equal(feats["what is this", 0], feats["describe the color", 0])


@pytest.mark.parametrize("name", QWEN)
def test_qwen_grids_follow_the_image_size(name):
    model, proc = getattr(vlm, BUILDERS[name])()
    text = proc.apply_chat_template(chat("what is this"), add_generation_prompt=True)
    grids = {}
    for size in [(32, 32), (24, 40), (8, 8), (200, 200)]:
        inputs = proc(text=[text], images=[image(0, size)], return_tensors="pt")
        t, h, w = inputs["image_grid_thw"][0].tolist()
        grids[size] = (t, h, w)
        assert inputs["pixel_values"].shape == (t * h * w, 3 * 2 * 4 * 4)
        assert (inputs["input_ids"] == model.config.image_token_id).sum() == t * h * w // 4
    assert grids[(32, 32)] == (1, 8, 8) and grids[(24, 40)] == (1, 6, 10)
    assert grids[(8, 8)] == (1, 4, 4) and grids[(200, 200)] == (1, 12, 12)  # min and max pixels


def test_llava_prompt_has_one_placeholder_per_patch():
    model, proc = vlm.tiny_llava()
    text = proc.apply_chat_template(chat("what is this"), add_generation_prompt=True)
    assert text == "USER: <image>\nwhat is this ASSISTANT:"
    inputs = proc(text=[text], images=[image(0, (40, 56))], return_tensors="pt")
    assert inputs["pixel_values"].shape == (1, 3, 32, 32)
    assert (inputs["input_ids"] == model.config.image_token_index).sum() == 16


def test_exports_load_with_plain_transformers(tmp_path):
    """Every export loads in a fresh interpreter that never imports this project, and computes the same."""
    cases = {}
    for name in BUILDERS:
        out = zoo.export(f"builtin:{name}", tmp_path / name)
        model, proc = getattr(vlm, BUILDERS[name])()
        text = proc.apply_chat_template(chat("what is this"), add_generation_prompt=True)
        img = image(2, (24, 40))
        img.save(tmp_path / f"{name}.png")
        inputs = proc(text=[text], images=[img], return_tensors="pt")
        with torch.no_grad():
            logits = model(**inputs).logits
        tensors = {k: v.contiguous() for k, v in inputs.items()} | {"logits": logits.contiguous()}
        save_file(tensors, tmp_path / f"{name}.safetensors")
        cases[name] = {"dir": str(out), "cls": MODEL_CLASSES[name], "text": text,
                       "ids": proc.tokenizer.decode(inputs["input_ids"][0])}
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    code = r'''
import json, sys, torch
import transformers
from PIL import Image
from safetensors.torch import load_file
from transformers import AutoImageProcessor, AutoProcessor, AutoTokenizer
cases = json.load(open("cases.json"))
msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "what is this"}]}]
for name, case in cases.items():
    d, ref = case["dir"], load_file(name + ".safetensors")
    model = getattr(transformers, case["cls"]).from_pretrained(d).eval()
    tok = AutoTokenizer.from_pretrained(d)
    assert tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False) == case["text"], name
    ids = tok(case["ids"], add_special_tokens=False, return_tensors="pt")["input_ids"]
    assert torch.equal(ids, ref["input_ids"]), name
    px = AutoImageProcessor.from_pretrained(d)(images=[Image.open(name + ".png")], return_tensors="pt")
    assert torch.allclose(px["pixel_values"], ref["pixel_values"], atol=1e-6), name
    try:
        proc = AutoProcessor.from_pretrained(d)
        status = "processor"
        assert torch.equal(proc(text=[case["text"]], images=[Image.open(name + ".png")],
                                return_tensors="pt")["input_ids"], ref["input_ids"]), name
    except ImportError as exc:  # transformers' Qwen video processors need torchvision
        assert "Qwen" in case["cls"] and "orchvision" in str(exc), (name, exc)
        status = "needs-torchvision"
    inputs = {k: v for k, v in ref.items() if k != "logits"}
    with torch.no_grad():
        logits = model(**inputs).logits
    assert (logits - ref["logits"]).abs().max() < 1e-4, name
    print(name, status)
assert "adapters" not in sys.modules and "service" not in sys.modules
'''
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    lines = dict(line.split() for line in res.stdout.strip().splitlines())
    assert set(lines) == set(BUILDERS) and lines["tiny-llava"] == "processor"
    config = json.loads((tmp_path / "tiny-qwen2-vl" / "processor_config.json").read_text())
    assert config["processor_class"] == "Qwen2VLProcessor"
    assert config["video_processor"]["video_processor_type"] == "Qwen2VLVideoProcessor"


@pytest.mark.parametrize("name", QWEN)
def test_load_processor_reads_an_export_without_torchvision(name, tmp_path):
    out = zoo.export(f"builtin:{name}", tmp_path / name)
    _, proc = getattr(vlm, BUILDERS[name])()
    model_type = json.loads((out / "config.json").read_text())["model_type"]
    loaded = vlm.load_processor(str(out), model_type)
    text = proc.apply_chat_template(chat("what is this"), add_generation_prompt=True)
    assert loaded.apply_chat_template(chat("what is this"), add_generation_prompt=True) == text
    a = proc(text=[text], images=[image(4, (24, 40))], return_tensors="pt")
    b = loaded(text=[text], images=[image(4, (24, 40))], return_tensors="pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
