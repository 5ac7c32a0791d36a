import pytest

from service.cli import main

pytestmark = pytest.mark.unit


def test_models_list_names_every_builtin(capsys):
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    for name in ("tiny-clip", "clip-vit-b32-random", "tiny-llava", "tiny-qwen2-vl", "tiny-qwen2.5-vl", "tiny-qwen3-vl"):
        assert f"builtin:{name} " in out


def test_models_export_writes_a_hf_folder(tmp_path, capsys):
    assert main(["models", "export", "builtin:tiny-clip", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "config.json").exists()
    assert any(p.suffix == ".safetensors" for p in (tmp_path / "out").iterdir())
    assert main(["models", "export", "builtin:nope", str(tmp_path / "x")]) == 2


def test_models_list_names_the_trained_fashion_models(capsys):
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    for name in ("fashion-clip", "fashion-clip-fare", "fashion-clip-tecoa"):
        assert f"builtin:{name} " in out


def test_models_train_refuses_models_without_a_recipe_or_a_dataset(tmp_path, monkeypatch, capsys):
    assert main(["models", "train", "builtin:tiny-clip"]) == 2
    assert "only fashion-clip" in capsys.readouterr().out
    monkeypatch.setenv("RADAPT_FASHION_MNIST", str(tmp_path / "absent"))
    assert main(["models", "train", "fashion-clip"]) == 2
    assert "apt-get install dataset-fashion-mnist" in capsys.readouterr().out
