"""Weight digest: which checkpoint an anchor was computed for (patch embedding and block 0).

A fingerprint names the architecture; two checkpoints of one architecture (CLIP and FARE, say)
share it, yet a white anchor of one is not the white anchor of the other. The digest summarises
the weights the anchor depends on -- the module that first sees the pixels and encoder block 0 --
so a file built for another checkpoint is caught at load.

It must survive the dtype a server loads in (bfloat16 rounds each weight by up to 2^-9), so it is a
sketch, not a hash: per tensor, its RMS and ``PROJECTIONS`` projections on fixed +-1 patterns
(period ``PERIOD``: the tensor is folded into ``PERIOD`` bins first, one pass), scaled by
``1/sqrt(n)``. Two sketches estimate the relative RMS difference of every tensor; ``TOLERANCE``
sits above bf16 rounding (about 0.1-0.2%) and below what fine-tuning changes.
Stored as ``"v1:" + base64(float64 values)``; computed once per model, when R-Adapt is injected.
"""

from __future__ import annotations

import base64
import math
import struct
from collections.abc import Iterable

import torch
from torch import nn

VERSION = "v1"
PROJECTIONS = 16
PERIOD = 8191  # a prime
TOLERANCE = 0.005  # relative RMS difference per tensor beyond which weights differ
_PRIME = 1_000_003


def _sign_patterns() -> torch.Tensor:
    """Fixed +-1 patterns ``[PROJECTIONS, PERIOD]`` (float64), the same on every machine and torch version."""
    idx = torch.arange(PERIOD, dtype=torch.int64)
    rows = [((idx * (7919 * (j + 1) + 104_729) + 31 * j + 17) % _PRIME < _PRIME // 2) for j in range(PROJECTIONS)]
    return torch.stack(rows).to(torch.float64) * 2 - 1


def sketch(tensors: Iterable[torch.Tensor]) -> list[float]:
    """``[count, (rms, p_1..p_K) per tensor]`` of float tensors, in the order given."""
    values: list[float] = []
    count = 0
    patterns = _sign_patterns()
    for t in tensors:
        x = t.detach().to(device="cpu", dtype=torch.float64).reshape(-1)
        n = x.numel()
        folded = torch.nn.functional.pad(x, (0, -n % PERIOD)).view(-1, PERIOD).sum(0)  # [PERIOD]
        values.append(float(x.square().mean().sqrt()) if n else 0.0)
        values.extend((patterns @ folded / math.sqrt(max(1, n))).tolist())
        count += 1
    return [float(count), *values]


def module_tensors(modules: Iterable[nn.Module]) -> list[torch.Tensor]:
    """Floating parameters and buffers of ``modules``, in state-dict order (names sorted per module)."""
    out: list[torch.Tensor] = []
    for module in modules:
        state = module.state_dict(keep_vars=True)
        out += [state[k] for k in sorted(state) if torch.is_floating_point(state[k])]
    return out


def encode(values: list[float]) -> str:
    return f"{VERSION}:" + base64.b64encode(struct.pack(f"<{len(values)}d", *values)).decode()


def decode(text: str) -> list[float] | None:
    """The values of a digest string; None when it is not one this build reads."""
    version, sep, payload = text.partition(":")
    if version != VERSION or not sep:
        return None
    try:
        raw = base64.b64decode(payload, validate=True)
    except ValueError:
        return None
    if len(raw) % 8 or not raw:
        return None
    values = list(struct.unpack(f"<{len(raw) // 8}d", raw))
    if not all(math.isfinite(v) for v in values) or values[0] * (1 + PROJECTIONS) != len(values) - 1:
        return None
    return values


def is_valid(text: str) -> bool:
    return decode(text) is not None


def weights_digest(modules: Iterable[nn.Module]) -> str:
    """The digest of ``modules``' weights (e.g. the patch embedding and encoder block 0)."""
    return encode(sketch(module_tensors(modules)))


def difference(a: str, b: str) -> float:
    """Largest relative RMS difference of one tensor between two digests (``inf``: not comparable)."""
    if a == b:
        return 0.0
    va, vb = decode(a), decode(b)
    if va is None or vb is None or len(va) != len(vb):
        return math.inf
    worst = 0.0
    step = 1 + PROJECTIONS
    for i in range(1, len(va), step):
        rms = max(va[i], vb[i])
        if rms == 0.0:
            continue
        proj = math.sqrt(sum((x - y) ** 2 for x, y in zip(va[i + 1:i + step], vb[i + 1:i + step], strict=True))
                         / PROJECTIONS)
        worst = max(worst, abs(va[i] - vb[i]) / rms, proj / rms)
    return worst

