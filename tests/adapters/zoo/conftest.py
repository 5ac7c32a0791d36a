"""Synthetic Fashion-MNIST IDX files, so dataset code runs without the Debian package."""

import gzip
import struct

import numpy as np
import pytest

from adapters.zoo import fashion_data


def _write_idx(path, array: np.ndarray) -> None:
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(">" + "I" * array.ndim, *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture()
def fake_dataset(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("test", 10)):
        images, labels = fashion_data.FILES[split]
        _write_idx(tmp_path / images, rng.integers(0, 256, (n, 28, 28)))
        _write_idx(tmp_path / labels, np.arange(n) % 10)
    monkeypatch.setenv("RADAPT_FASHION_MNIST", str(tmp_path))
    return tmp_path
