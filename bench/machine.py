"""What the figures were measured on: CPU, memory, versions, the run's config, and how busy the
machine was with work that was not the benchmark's (other processes share these cores)."""

from __future__ import annotations

import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

CLK_TCK = os.sysconf("SC_CLK_TCK")


def config_dict(cfg: Any) -> dict[str, Any]:
    """A benchmark's config dataclass as JSON-ready values (paths as strings)."""
    return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()}


def describe() -> dict[str, object]:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines()
                  if line.startswith("model name")), platform.processor())
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), [])
    mem_kb = next((int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal")), 0) if Path("/proc/meminfo").exists() else 0
    versions = {}
    for pkg in ("radapt-serve", "torch", "transformers", "fastapi", "uvicorn", "httpx"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = "absent"
    import torch

    return {
        "cpu": model, "cores": os.cpu_count(), "memory_gib": round(mem_kb / 2**20, 1),
        "avx512_bf16": "avx512_bf16" in flags, "amx_bf16": "amx_bf16" in flags,
        "torch_threads": torch.get_num_threads(), "python": sys.version.split()[0],
        "platform": platform.platform(), "versions": versions,
        "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
    }


def _busy_jiffies() -> int:
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    values = [int(v) for v in fields]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return sum(values[:8]) - idle


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of ``pids`` (children they waited for included)."""
    return _own_jiffies(pids) / CLK_TCK


def _own_jiffies(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # after the name: state(0) ... utime(11) stime(12) cutime(13) cstime(14)
        total += sum(int(x) for x in stat[11:15])
    return total


@dataclass
class ForeignLoad:
    """CPU used by processes other than ``pids`` (the bench and its servers) over a window.

    ``cores()`` is the average number of cores they kept busy: 0 on a quiet machine.
    """

    pids_fn: object  # () -> list[int]
    t0: float = 0.0
    busy0: int = 0
    own0: int = 0

    def start(self) -> ForeignLoad:
        self.t0, self.busy0, self.own0 = time.monotonic(), _busy_jiffies(), _own_jiffies(self.pids_fn())
        return self

    def cores(self) -> float:
        dt = max(time.monotonic() - self.t0, 1e-6)
        busy = _busy_jiffies() - self.busy0
        own = _own_jiffies(self.pids_fn()) - self.own0
        return round(max(busy - own, 0) / CLK_TCK / dt, 2)
