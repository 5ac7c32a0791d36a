"""Read the vision tower of an open_clip checkpoint (FARE, TeCoA publish theirs in this format).

Only safetensors files are read (``open_clip_model.safetensors``); pickled ``.bin``/``.pt`` files
are refused, never unpickled. The weights are mapped onto a transformers ``CLIPVisionModel`` with
the served model's vision config, so a model-guided anchor comes out in the served model's layout.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from adapters.method.config import AdapterError, AdapterMismatchError

SAFETENSORS_NAME = "open_clip_model.safetensors"


def find_checkpoint(path: str | Path) -> Path | None:
    """The open_clip safetensors file at ``path`` (a file, or a folder holding one), else None."""
    p = Path(path).expanduser()
    if p.is_file() and p.suffix in {".bin", ".pt", ".pth", ".ckpt"}:
        raise AdapterError(f"{p}: pickled checkpoints are never loaded; convert it to safetensors "
                           f"(e.g. open_clip's own export) and pass the .safetensors file")
    if p.is_file() and p.suffix == ".safetensors":
        return p
    if p.is_dir() and (p / SAFETENSORS_NAME).is_file() and not (p / "config.json").is_file():
        return p / SAFETENSORS_NAME
    return None


def vision_state_dict(open_clip: dict[str, torch.Tensor], num_layers: int) -> dict[str, torch.Tensor]:
    """Map open_clip ``visual.*`` keys to ``CLIPVisionModel`` keys.

    open_clip packs q, k, v into one ``in_proj`` ``[3D, D]``; transformers keeps three ``[D, D]``.
    """
    src = {k[len("visual."):]: v for k, v in open_clip.items() if k.startswith("visual.")}
    if "conv1.weight" not in src:
        raise AdapterError("not an open_clip ViT checkpoint: no visual.conv1.weight "
                           "(only ViT image towers are supported)")
    out = {
        "embeddings.patch_embedding.weight": src["conv1.weight"],
        "embeddings.class_embedding": src["class_embedding"],
        "embeddings.position_embedding.weight": src["positional_embedding"],
        "pre_layrnorm.weight": src["ln_pre.weight"],
        "pre_layrnorm.bias": src["ln_pre.bias"],
        "post_layernorm.weight": src["ln_post.weight"],
        "post_layernorm.bias": src["ln_post.bias"],
    }
    for i in range(num_layers):
        s, d = f"transformer.resblocks.{i}.", f"encoder.layers.{i}."
        q, k, v = src[s + "attn.in_proj_weight"].chunk(3, dim=0)
        qb, kb, vb = src[s + "attn.in_proj_bias"].chunk(3, dim=0)
        out.update({
            d + "self_attn.q_proj.weight": q, d + "self_attn.k_proj.weight": k, d + "self_attn.v_proj.weight": v,
            d + "self_attn.q_proj.bias": qb, d + "self_attn.k_proj.bias": kb, d + "self_attn.v_proj.bias": vb,
            d + "self_attn.out_proj.weight": src[s + "attn.out_proj.weight"],
            d + "self_attn.out_proj.bias": src[s + "attn.out_proj.bias"],
            d + "layer_norm1.weight": src[s + "ln_1.weight"], d + "layer_norm1.bias": src[s + "ln_1.bias"],
            d + "layer_norm2.weight": src[s + "ln_2.weight"], d + "layer_norm2.bias": src[s + "ln_2.bias"],
            d + "mlp.fc1.weight": src[s + "mlp.c_fc.weight"], d + "mlp.fc1.bias": src[s + "mlp.c_fc.bias"],
            d + "mlp.fc2.weight": src[s + "mlp.c_proj.weight"], d + "mlp.fc2.bias": src[s + "mlp.c_proj.bias"],
        })
    return out


def load_vision_model(path: Path, vision_config: object) -> torch.nn.Module:
    """A ``CLIPVisionModel`` with ``vision_config`` holding the open_clip checkpoint's image tower."""
    from transformers import CLIPVisionModel

    try:
        raw = load_file(str(path))
    except Exception as exc:  # safetensors raises several types for a bad file
        raise AdapterError(f"{path}: not a readable safetensors file ({exc})") from exc
    try:
        state = vision_state_dict(raw, vision_config.num_hidden_layers)
    except KeyError as exc:
        raise AdapterMismatchError(f"{path}: open_clip vision tower lacks {exc.args[0]}; it has fewer "
                                   "layers or another layout than the served model") from exc
    model = CLIPVisionModel(vision_config).eval()
    expected = model.state_dict()
    for key, tensor in state.items():
        if key not in expected or expected[key].shape != tensor.shape:
            shape = tuple(expected[key].shape) if key in expected else None
            raise AdapterMismatchError(f"{path}: {key} has shape {tuple(tensor.shape)}, the served model "
                                       f"needs {shape}: not the same architecture")
    model.load_state_dict(state, strict=True)
    for p in model.parameters():
        p.requires_grad_(False)
    return model
