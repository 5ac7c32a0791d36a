"""Fashion-MNIST as CLIP training and evaluation data (Debian's ``dataset-fashion-mnist``).

70,000 grey 28x28 images of 10 classes (Zalando, MIT license); ``apt-get install
dataset-fashion-mnist`` puts the IDX files under ``/usr/share/datasets/fashion-mnist``
(``RADAPT_FASHION_MNIST`` overrides the folder). Images come back as ``[N, 3, 28, 28]`` fp32 in
[0, 1] (grey repeated over RGB), exactly what ``builtin:fashion-clip``'s processor makes of the
same image as a PNG, so training, serving and evaluation see the same pixels.

A fixed slice of the test split (``TEST_SLICE``, committed as ``.npz``) lets tests and the
README run with no dataset installed.
"""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import torch

DEFAULT_ROOT = "/usr/share/datasets/fashion-mnist"
CLASSES: tuple[str, ...] = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                            "Sneaker", "Bag", "Ankle boot")
FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
         "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
TEST_SLICE = Path(__file__).with_name("weights") / "fashion-mnist-test-slice.npz"


def folder_name(classname: str) -> str:
    """A class name as an ImageFolder folder (``/`` is not allowed): ``T-shirt/top`` -> ``T-shirt_top``."""
    return classname.replace("/", "_")


def root() -> Path:
    return Path(os.environ.get("RADAPT_FASHION_MNIST") or DEFAULT_ROOT)


def available() -> bool:
    """Whether the dataset's IDX files are installed."""
    return all((root() / f).is_file() for pair in FILES.values() for f in pair)


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    shape = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_raw(split: str) -> tuple[np.ndarray, np.ndarray]:
    """``(images [N, 28, 28] uint8, labels [N] uint8)`` of ``split`` (``train`` or ``test``)."""
    if split not in FILES:
        raise ValueError(f"split must be train or test, got {split!r}")
    if not available():
        raise FileNotFoundError(f"Fashion-MNIST not found under {root()}: apt-get install dataset-fashion-mnist "
                                "(or set RADAPT_FASHION_MNIST to a folder with the IDX .gz files)")
    images, labels = (_read_idx(root() / f) for f in FILES[split])
    return images, labels


def to_pixels(images: np.ndarray) -> torch.Tensor:
    """``[N, 28, 28]`` uint8 -> ``[N, 3, 28, 28]`` fp32 in [0, 1] (grey as RGB)."""
    x = torch.from_numpy(np.array(images, dtype=np.float32)).div_(255.0)  # a copy: IDX buffers are read-only
    return x.unsqueeze(1).expand(-1, 3, -1, -1).contiguous()


def load(split: str, n: int | None = None, offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(pixels [N, 3, 28, 28] in [0, 1], labels [N] int64)``: ``n`` images from ``offset`` in file order."""
    images, labels = load_raw(split)
    end = images.shape[0] if n is None else offset + n
    return to_pixels(images[offset:end]), torch.from_numpy(labels[offset:end].astype(np.int64))


def load_test_slice(n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The committed first test images (no dataset needed): ``[N, 3, 28, 28]``, ``[N]``."""
    with np.load(TEST_SLICE) as z:
        images, labels = z["images"], z["labels"]
    n = images.shape[0] if n is None else n
    return to_pixels(images[:n]), torch.from_numpy(labels[:n].astype(np.int64))


def write_test_slice(n: int = 500, path: Path = TEST_SLICE) -> Path:
    """Save the first ``n`` test images and labels as a compressed ``.npz`` (uint8)."""
    images, labels = load_raw("test")
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, images=images[:n], labels=labels[:n])
    return path


def write_image_folder(out: str | os.PathLike[str], split: str = "test", n: int | None = None,
                       offset: int = 0) -> Path:
    """Write images as PNGs in the ImageFolder layout ``radapt eval --dataset`` reads."""
    from PIL import Image

    images, labels = load_raw(split)
    end = images.shape[0] if n is None else offset + n
    out = Path(out)
    for c in CLASSES:
        (out / folder_name(c)).mkdir(parents=True, exist_ok=True)
    for i in range(offset, min(end, images.shape[0])):
        Image.fromarray(images[i], mode="L").save(out / folder_name(CLASSES[labels[i]]) / f"{split}{i:05d}.png")
    return out


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(description="write Fashion-MNIST images as PNGs (ImageFolder) or the test slice")
    p.add_argument("--image-folder", metavar="DIR", help="write an ImageFolder (one folder per class) here")
    p.add_argument("--split", default="test", choices=sorted(FILES))
    p.add_argument("--n", type=int, default=None, help="images (default: all of the split)")
    p.add_argument("--offset", type=int, default=0, help="first image index in the split")
    p.add_argument("--test-slice", type=int, metavar="N",
                   help=f"rewrite {TEST_SLICE.name} with the first N test images")
    args = p.parse_args(argv)
    if args.image_folder:
        print(f"wrote {write_image_folder(args.image_folder, args.split, args.n, args.offset)}")
    if args.test_slice:
        print(f"wrote {write_test_slice(args.test_slice)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
