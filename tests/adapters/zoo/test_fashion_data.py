"""Fashion-MNIST reading: IDX files, pixels equal to the processor's, the ImageFolder export.

Runs on synthetic IDX files (RADAPT_FASHION_MNIST), so no dataset is needed.
"""

import pytest
import torch
from PIL import Image

from adapters.zoo import fashion, fashion_data

pytestmark = pytest.mark.unit


def test_load_reads_idx_as_grey_rgb_in_unit_range(fake_dataset):
    assert fashion_data.available()
    x, y = fashion_data.load("test", n=4, offset=3)
    assert x.shape == (4, 3, 28, 28) and x.dtype == torch.float32
    assert torch.equal(y, torch.tensor([3, 4, 5, 6]))
    assert torch.equal(x[:, 0], x[:, 2]) and 0 <= float(x.min()) and float(x.max()) <= 1
    assert x.std() > 0.1


def test_pixels_equal_what_the_processor_makes_of_the_png(fake_dataset, tmp_path):
    out = fashion_data.write_image_folder(tmp_path / "folder", "test", n=10)
    assert sorted(p.name for p in out.iterdir()) == sorted(fashion_data.folder_name(c) for c in fashion_data.CLASSES)
    assert (out / "T-shirt_top" / "test00000.png").exists()
    processor = fashion.fashion_processor().image_processor
    png = Image.open(out / "Bag" / "test00008.png").convert("RGB")
    via_processor = processor([png], do_normalize=False, return_tensors="pt")["pixel_values"]
    assert torch.equal(via_processor, fashion_data.load("test", n=1, offset=8)[0])


def test_missing_dataset_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("RADAPT_FASHION_MNIST", str(tmp_path / "none"))
    assert not fashion_data.available()
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        fashion_data.load("train")


def test_committed_slice_is_balanced_real_data():
    x, y = fashion_data.load_test_slice()
    assert x.shape == (1000, 3, 28, 28)
    assert torch.bincount(y, minlength=10).min() >= 80
    assert 0.2 < float(x.mean()) < 0.4  # Fashion-MNIST's mean is ~0.286
