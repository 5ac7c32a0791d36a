import json

import pytest
import torch

from adapters import load_adapter
from service.cli import main

pytestmark = pytest.mark.integration


def test_build_white_then_inspect(tmp_path, capsys, tiny_clip):
    out = tmp_path / "white.safetensors"
    assert main(["adapter", "build", "--model", "builtin:tiny-clip", "--method", "white", "--sigma", "0.75",
                 "--alpha", "0.25", "--out", str(out), "--device", "cpu"]) == 0
    adapter = load_adapter(out)
    assert adapter.config.method == "white" and adapter.config.sigma == 0.75 and adapter.config.alpha == 0.25
    assert adapter.anchor.shape == (17, 32)
    capsys.readouterr()
    assert main(["adapter", "inspect", str(out)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["fingerprint"]["num_tokens"] == 17 and info["anchor_shape"] == [17, 32]
    assert info["fingerprint"]["weights"].startswith("sha256:")  # the weight digest, shown short


def test_build_guided_from_a_local_robust_folder(tmp_path, tiny_clip):
    from transformers import CLIPModel

    torch.manual_seed(7)
    robust = CLIPModel(tiny_clip.model.config).eval()
    robust.save_pretrained(tmp_path / "robust")
    tiny_clip.processor.save_pretrained(tmp_path / "robust")
    out = tmp_path / "guided.safetensors"
    assert main(["adapter", "build", "--model", "builtin:tiny-clip", "--method", "guided", "--robust-model",
                 str(tmp_path / "robust"), "--out", str(out), "--device", "cpu"]) == 0
    adapter = load_adapter(out)
    assert adapter.config.method == "guided" and adapter.config.source.startswith("guided:")
    white = tmp_path / "w.safetensors"
    main(["adapter", "build", "--model", "builtin:tiny-clip", "--out", str(white), "--device", "cpu"])
    assert not torch.allclose(adapter.anchor, load_adapter(white).anchor, atol=1e-3)


def test_build_errors_exit_2(tmp_path, capsys):
    assert main(["adapter", "build", "--model", "builtin:tiny-clip", "--method", "guided",
                 "--out", str(tmp_path / "g.safetensors"), "--device", "cpu"]) == 2
    assert main(["adapter", "build", "--model", "builtin:nope", "--out", str(tmp_path / "x.safetensors")]) == 2
    assert main(["adapter", "inspect", str(tmp_path / "missing.safetensors")]) == 2
    assert "error:" in capsys.readouterr().err
