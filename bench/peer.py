"""The peer: infinity-emb serving the same exported checkpoint, from its own virtual environment.

Findings that shape this module (infinity-emb 0.0.78, checked against its source and by running it):
- it needs transformers < 5 (with 5.x ``get_image_features`` returns an output object where it
  expects a tensor) and numpy < 2, so it cannot share the project's environment;
- on CPU it always computes in float32: ``--dtype`` is applied only when the device is CUDA
  (``infinity_emb/transformer/vision/torch_vision.py``), and a bfloat16 checkpoint is upcast on
  load by transformers 4.x. The bfloat16 rows therefore compare against the float32 peer.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import venv
from pathlib import Path

from bench.server import ServerProcess

log = logging.getLogger(__name__)

PEER_VERSION = "0.0.78"
# aiohttp: infinity's image path opens a client session even for data URIs
REQUIREMENTS = (f"infinity-emb[server,torch]=={PEER_VERSION}", "pillow", "aiohttp", "transformers>=4.47,<5")
REPO_ROOT = Path(__file__).resolve().parent.parent


def default_venv_dir() -> Path:
    root = os.environ.get("RADAPT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "radapt")
    return Path(root) / "bench-venvs" / f"infinity-emb-{PEER_VERSION}"


def ensure_venv(venv_dir: Path | None = None) -> Path:
    """Create (once) a virtual environment with infinity-emb; torch pinned to the local CPU build.

    Returns the path of its ``infinity_emb`` executable. A marker file records the requirement
    set, so a changed set rebuilds the environment.
    """
    venv_dir = venv_dir or default_venv_dir()
    exe = venv_dir / "bin" / "infinity_emb"
    marker = venv_dir / ".radapt-bench-requirements"
    wanted = "\n".join(REQUIREMENTS) + "\n"
    if exe.exists() and marker.exists() and marker.read_text() == wanted:
        return exe
    log.info("installing infinity-emb %s into %s (one time, a few minutes)", PEER_VERSION, venv_dir)
    venv.EnvBuilder(with_pip=True, clear=True).create(venv_dir)
    cmd = [str(venv_dir / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    constraints = REPO_ROOT / "constraints-cpu.txt"
    if constraints.exists():  # without it pip fetches a multi-GB CUDA torch
        cmd += ["-c", str(constraints)]
    proc = subprocess.run(cmd + list(REQUIREMENTS), capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"installing the peer failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    marker.write_text(wanted)
    return exe


def peer_version(exe: Path) -> dict[str, str]:
    """Versions of infinity-emb, torch and transformers inside the peer's environment."""
    code = ("import importlib.metadata as m, json; print(json.dumps({p: m.version(p) for p in "
            "('infinity-emb', 'torch', 'transformers', 'sentence-transformers')}))")
    out = subprocess.run([str(exe.parent / "python"), "-c", code], capture_output=True, text=True, check=True)
    import json

    return json.loads(out.stdout)


def export_checkpoint(model: str, out_dir: Path) -> Path:
    """``radapt models export`` as a user would run it; reused when already written."""
    if (out_dir / "config.json").exists() and (out_dir / "model.safetensors").exists():
        return out_dir
    radapt = Path(sys.executable).parent / "radapt"
    subprocess.run([str(radapt), "models", "export", model, str(out_dir)], check=True,
                   capture_output=True, text=True)
    return out_dir


def peer_server(exe: Path, checkpoint: Path, served_name: str, batch_size: int, log_path: Path) -> ServerProcess:
    """infinity-emb on CPU, the bench's batch size, offline, telemetry off, no disk cache."""
    cmd = [str(exe), "v2", "--model-id", str(checkpoint), "--served-model-name", served_name,
           "--device", "cpu", "--dtype", "float32", "--batch-size", str(batch_size),
           "--no-vector-disk-cache", "--no-model-warmup", "--host", "127.0.0.1", "--port", "{port}",
           "--log-level", "warning"]
    env = {"HF_HUB_OFFLINE": "1", "INFINITY_ANONYMOUS_USAGE_STATS": "0", "DO_NOT_TRACK": "1"}
    return ServerProcess("infinity-emb", cmd, "/health", log_path, env=env, start_timeout_s=300)
