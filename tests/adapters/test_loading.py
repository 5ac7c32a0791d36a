import pytest
import torch

from adapters import zoo
from adapters.loading import ModelLoadError, load_model, resolve_dtype

pytestmark = pytest.mark.unit


def test_builtin_local_folder_and_hub_id_share_one_loader(tmp_path, tiny_clip):
    folder = zoo.export("builtin:tiny-clip", tmp_path / "clip")
    from_folder = load_model(str(folder), device="cpu")
    assert from_folder.family == "clip" and from_folder.path == str(folder)
    px = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        a = tiny_clip.model.get_image_features(pixel_values=px).pooler_output
        b = from_folder.model.get_image_features(pixel_values=px).pooler_output
    assert torch.equal(a, b)  # deterministic builder: the same weights every time
    assert all(not p.requires_grad for p in from_folder.model.parameters())


def test_offline_hub_miss_says_what_to_do(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="HF_HUB_OFFLINE.*local folder"):
        load_model("nobody-here/no-such-model-radapt", device="cpu")


def test_unknown_builtin_and_missing_folder():
    with pytest.raises(ModelLoadError, match="known: builtin:"):
        load_model("builtin:nope", device="cpu")
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model("./no/such/folder", device="cpu")


def test_dtype_resolution():
    assert resolve_dtype("auto", torch.device("cpu"), frozenset({"avx2"})) == torch.float32
    assert resolve_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(ModelLoadError, match="dtype"):
        resolve_dtype("float8", torch.device("cpu"))


@pytest.mark.parametrize("name, family", [("builtin:tiny-llava", "llava"), ("builtin:tiny-qwen2-vl", "qwen2_vl"),
                                          ("builtin:tiny-qwen2.5-vl", "qwen2_5_vl"),
                                          ("builtin:tiny-qwen3-vl", "qwen3_vl")])
def test_every_vlm_family_loads_through_the_one_loader(name, family):
    loaded = load_model(name, device="cpu")
    assert loaded.family == family
    assert hasattr(loaded.processor, "image_processor") and hasattr(loaded.processor, "tokenizer")
