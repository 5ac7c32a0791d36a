"""Model-guided anchors from open_clip-format (FARE/TeCoA-style) safetensors checkpoints."""

import pytest
import torch
from safetensors.torch import save_file

from adapters import AdapterError, AdapterMismatchError, load_adapter
from adapters.lab.openclip import find_checkpoint
from service.cli import main

pytestmark = pytest.mark.integration


def to_open_clip(model) -> dict[str, torch.Tensor]:
    """Write a transformers CLIPModel's vision tower under open_clip's key names (the inverse map)."""
    sd = {k: v.clone() for k, v in model.vision_model.state_dict().items()}
    out = {
        "visual.conv1.weight": sd["embeddings.patch_embedding.weight"],
        "visual.class_embedding": sd["embeddings.class_embedding"],
        "visual.positional_embedding": sd["embeddings.position_embedding.weight"],
        "visual.ln_pre.weight": sd["pre_layrnorm.weight"], "visual.ln_pre.bias": sd["pre_layrnorm.bias"],
        "visual.ln_post.weight": sd["post_layernorm.weight"], "visual.ln_post.bias": sd["post_layernorm.bias"],
        "visual.proj": model.visual_projection.weight.T.contiguous(),
        "text_projection": torch.zeros(4, 4),  # text tower keys are ignored
    }
    for i in range(model.config.vision_config.num_hidden_layers):
        s, d = f"visual.transformer.resblocks.{i}.", f"encoder.layers.{i}."
        out[s + "attn.in_proj_weight"] = torch.cat([sd[d + f"self_attn.{x}_proj.weight"] for x in "qkv"])
        out[s + "attn.in_proj_bias"] = torch.cat([sd[d + f"self_attn.{x}_proj.bias"] for x in "qkv"])
        for a, b in [("attn.out_proj", "self_attn.out_proj"), ("ln_1", "layer_norm1"), ("ln_2", "layer_norm2"),
                     ("mlp.c_fc", "mlp.fc1"), ("mlp.c_proj", "mlp.fc2")]:
            out[s + a + ".weight"] = sd[d + b + ".weight"]
            out[s + a + ".bias"] = sd[d + b + ".bias"]
    return out


def test_guided_from_open_clip_equals_the_robust_models_white_anchor(tmp_path, tiny_clip):
    from transformers import CLIPModel

    from adapters import RAdaptModel

    torch.manual_seed(11)
    robust = CLIPModel(tiny_clip.model.config).eval()
    folder = tmp_path / "fare"
    folder.mkdir()
    save_file(to_open_clip(robust), str(folder / "open_clip_model.safetensors"))
    out = tmp_path / "guided.safetensors"
    assert main(["adapter", "build", "--model", "builtin:tiny-clip", "--method", "guided",
                 "--robust-model", str(folder), "--out", str(out), "--device", "cpu"]) == 0
    ip = tiny_clip.processor.image_processor
    expected = RAdaptModel(robust, ip.image_mean, ip.image_std).white_anchor()
    assert torch.allclose(load_adapter(out).anchor, expected, atol=1e-6)


def test_open_clip_of_another_size_is_refused(tmp_path, tiny_clip, capsys):
    from transformers import CLIPConfig, CLIPModel

    cfg = CLIPConfig(text_config=tiny_clip.model.config.text_config.to_dict(),
                     vision_config=dict(tiny_clip.model.config.vision_config.to_dict(), hidden_size=48,
                                        intermediate_size=96), projection_dim=16)
    path = tmp_path / "big.safetensors"
    save_file(to_open_clip(CLIPModel(cfg)), str(path))
    assert main(["adapter", "build", "--model", "builtin:tiny-clip", "--method", "guided",
                 "--robust-model", str(path), "--out", str(tmp_path / "g.safetensors"), "--device", "cpu"]) == 2
    assert "not the same architecture" in capsys.readouterr().err


def test_pickled_checkpoints_are_refused(tmp_path):
    (tmp_path / "open_clip_pytorch_model.bin").write_bytes(b"\x80\x04not-read")
    with pytest.raises(AdapterError, match="never loaded"):
        find_checkpoint(tmp_path / "open_clip_pytorch_model.bin")
    assert issubclass(AdapterMismatchError, AdapterError)
