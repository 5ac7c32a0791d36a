import pytest
import torch

from adapters import zoo
from adapters.zoo.loading import ModelLoadError, load_model, resolve_dtype

pytestmark = pytest.mark.unit


def test_builtin_local_folder_and_hub_id_share_one_loader(tmp_path, tiny_clip):
    folder = zoo.export("builtin:tiny-clip", tmp_path / "clip")
    from_folder = load_model(str(folder), device="cpu", dtype="float32")
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


AVX2_ONLY = frozenset({"sse4_2", "avx2", "fma"})
WITH_BF16 = frozenset({"avx2", "avx512f", "avx512_bf16"})
WITH_AMX = frozenset({"avx2", "amx_tile", "amx_bf16"})


@pytest.mark.parametrize("flags, expected", [(AVX2_ONLY, torch.float32), (WITH_BF16, torch.bfloat16),
                                             (WITH_AMX, torch.bfloat16), (frozenset(), torch.float32)])
def test_auto_dtype_picks_bf16_only_where_the_cpu_computes_it(flags, expected):
    """Finding 8: bf16 on an AVX2-only CPU runs ~7x slower than float32."""
    assert resolve_dtype("auto", torch.device("cpu"), flags) == expected


def test_a_forced_slow_dtype_is_used_with_a_warning_saying_why(caplog):
    import logging

    with caplog.at_level(logging.WARNING, logger="adapters.zoo.loading"):
        assert resolve_dtype("bfloat16", torch.device("cpu"), AVX2_ONLY) == torch.bfloat16
    assert "AVX512-BF16" in caplog.text and "slow" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="adapters.zoo.loading"):
        assert resolve_dtype("bfloat16", torch.device("cpu"), WITH_BF16) == torch.bfloat16
        assert resolve_dtype("float32", torch.device("cpu"), AVX2_ONLY) == torch.float32
    assert caplog.text == ""
    with caplog.at_level(logging.WARNING, logger="adapters.zoo.loading"):
        resolve_dtype("float16", torch.device("cpu"), AVX2_ONLY)
    assert "float16" in caplog.text


def test_cpu_flags_read_proc_cpuinfo(tmp_path):
    from adapters.zoo.loading import cpu_flags

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512_bf16\n\nprocessor\t: 1\nflags\t\t: fpu avx2\n")
    assert cpu_flags(str(info)) == {"fpu", "avx2", "avx512_bf16"}
    assert cpu_flags(str(tmp_path / "absent")) == frozenset()
