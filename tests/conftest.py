"""Suite-wide setup: offline, a private model cache per run, shared tiny checkpoints."""

from __future__ import annotations

import os
import shutil
import tempfile

# Before anything imports transformers or huggingface_hub: tests never touch the network, and
# builtin: exports go to a cache private to this run (subprocesses inherit both).
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("RADAPT_CACHE", tempfile.mkdtemp(prefix="radapt-test-cache-"))

import pytest  # noqa: E402


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    cache = os.environ.get("RADAPT_CACHE", "")
    if os.path.basename(cache).startswith("radapt-test-cache-"):
        shutil.rmtree(cache, ignore_errors=True)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models gain nothing from intra-op threads, and on a shared CPU two threads spin: use one."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_clip():
    """builtin:tiny-clip loaded through the real loader (fp32, CPU). Do not inject into it: use ``fresh_clip``."""
    from adapters.zoo.loading import load_model

    return load_model("builtin:tiny-clip", device="cpu", dtype="float32")


@pytest.fixture()
def fresh_clip():
    """A new, un-injected builtin:tiny-clip per test (R-Adapt injection mutates the model)."""
    from adapters.zoo.loading import load_model

    return load_model("builtin:tiny-clip", device="cpu", dtype="float32")
