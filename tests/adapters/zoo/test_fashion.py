"""builtin:fashion-clip is a real zero-shot classifier that attacks break and FARE defends.

Every check runs on the committed weights and the committed test slice: no dataset needed.
Floors come from the measured values in docs/fashion-clip.md, with a margin.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from adapters import zoo
from adapters.zoo import fashion, fashion_data

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
CHECK = ROOT / "docs" / "fashion-clip" / "check.json"

# Measured on the first 500 images of the slice (docs/fashion-clip.md): 'a photo of a {}.' and the
# bare class name. The floors leave a few points for other machines' float rounding.
FLOOR_PROMPT = 0.78  # measured 0.810
FLOOR_BARE = 0.78  # measured 0.814


@pytest.fixture(scope="module")
def slice500():
    return fashion_data.load_test_slice(500)


def _classifier(variant: str, templates=("a photo of a {}.",)):
    """A zero-shot classifier over a fresh copy of ``variant`` (R-Adapt injects into the model it wraps)."""
    from adapters.lab.zeroshot import ZeroShotClassifier, class_embeddings, logit_scale_of
    from adapters.method.model import RAdaptModel

    model = fashion.load_variant(variant)[0]
    text = class_embeddings(model, fashion.fashion_processor().tokenizer, fashion_data.CLASSES, templates)
    return ZeroShotClassifier(RAdaptModel(model, fashion.FASHION_MEAN, fashion.FASHION_STD), text,
                              logit_scale_of(model))


def _accuracy(clf, x, y) -> float:
    with torch.no_grad():
        return float((clf(x).argmax(-1) == y).float().mean())


@pytest.mark.parametrize(("templates", "floor"), [(("a photo of a {}.",), FLOOR_PROMPT), (("{}",), FLOOR_BARE)])
def test_zero_shot_accuracy_on_the_committed_slice(slice500, templates, floor):
    x, y = slice500
    acc = _accuracy(_classifier("fashion-clip", templates), x, y)
    assert acc >= floor, f"zero-shot accuracy {acc:.3f} with {templates[0]!r} under the floor {floor}"


def test_pgd_breaks_the_standard_model_and_fare_keeps_clearly_more(slice500):
    """PGD-10 at eps 8/255 on 200 images (on the first 100: standard 78% -> 26%, FARE 78% -> 42%)."""
    from adapters.lab.attacks import attack

    x, y = slice500[0][:200], slice500[1][:200]
    acc = {}
    for name, variant in (("standard", "fashion-clip"), ("fare", "fashion-clip-fare")):
        clf = _classifier(variant)
        x_adv = attack(clf, x, y, eps=8, name="pgd", steps=10, seed=0)
        acc[name] = (_accuracy(clf, x, y), _accuracy(clf, x_adv, y))
    (clean, robust), (fare_clean, fare_robust) = acc["standard"], acc["fare"]
    assert robust < 0.5 * clean, acc  # the attack costs the standard model most of its accuracy
    assert fare_robust > robust + 0.10, acc  # FARE keeps clearly more under the same attack
    assert fare_clean > clean - 0.05, acc


def test_baselines_change_only_the_vision_tower():
    standard = fashion.load_variant("fashion-clip")[0]
    fare = fashion.load_variant("fashion-clip-fare")[0]
    tecoa = fashion.load_variant("fashion-clip-tecoa")[0]
    base = standard.state_dict()
    for model in (fare, tecoa):
        state = model.state_dict()
        text = [k for k in base if not k.startswith(fashion.VISION_PREFIXES)]
        assert all(torch.equal(base[k], state[k]) for k in text)
        vision = [k for k in base if k.startswith(fashion.VISION_PREFIXES) and base[k].is_floating_point()]
        assert sum(not torch.equal(base[k], state[k]) for k in vision) > len(vision) // 2


def test_export_loads_and_classifies_with_plain_transformers(tmp_path):
    out = zoo.export("builtin:fashion-clip", tmp_path / "fc")
    images, labels = fashion_data.load_test_slice(64)
    from PIL import Image

    for i, img in enumerate(images):
        Image.fromarray((img[0] * 255).round().byte().numpy(), mode="L").save(tmp_path / f"{i:02d}.png")
    names = list(fashion_data.CLASSES)
    code = (
        "import sys, torch\n"
        "from PIL import Image\n"
        "from transformers import AutoProcessor, CLIPModel\n"
        f"m = CLIPModel.from_pretrained({str(out)!r}).eval(); p = AutoProcessor.from_pretrained({str(out)!r})\n"
        f"imgs = [Image.open({str(tmp_path)!r} + f'/{{i:02d}}.png').convert('RGB') for i in range(64)]\n"
        f"x = p(text=['a photo of a ' + n + '.' for n in {names!r}], images=imgs, return_tensors='pt', padding=True)\n"
        "with torch.no_grad(): print(' '.join(str(int(v)) for v in m(**x).logits_per_image.argmax(-1)))\n"
        "assert 'adapters' not in sys.modules and 'service' not in sys.modules\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    predicted = torch.tensor([int(v) for v in res.stdout.split()])
    assert float((predicted == labels).float().mean()) >= FLOOR_PROMPT - 0.05
    assert len(set(predicted.tolist())) >= 8  # a real classifier, not one class


def test_each_variant_has_its_own_cache_folder():
    digests = {zoo.spec_for(f"builtin:{v}").digest() for v in fashion.VARIANTS}
    assert len(digests) == 3 and all(d.startswith("-") for d in digests)
    assert zoo.spec_for("builtin:tiny-clip").digest() == ""


def test_the_table_command_reproduces_its_committed_check():
    """``python -m adapters.zoo.fashion_eval`` on the subset recorded in docs/fashion-clip/check.json."""
    from adapters.zoo.fashion_eval import run_table

    committed = json.loads(CHECK.read_text())
    s = committed["settings"]
    results, _ = run_table(n=s["n"], eps=s["eps"], attacks=s["attacks"], steps=s["steps"],
                           batch_size=s["batch_size"], progress=False)
    got = {r.config.name: (r.clean, r.robust) for r in results}
    for c in committed["configurations"]:
        clean, robust = got[c["name"]]
        assert abs(clean - c["clean"]) <= 0.02, c["name"]
        for e, v in c["robust"].items():
            assert abs(robust[float(e)] - v) <= 0.04, (c["name"], e, robust[float(e)], v)
    spread = [c["robust"][f"{s['eps'][-1]:g}"] for c in committed["configurations"]]
    assert max(spread) - min(spread) > 0.2  # the configurations differ: the check can fail
