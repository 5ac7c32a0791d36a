import json
from pathlib import Path

import pytest

from adapters.lab.lvlm_eval import Item, attack_references, read_dataset

pytestmark = pytest.mark.unit


def test_attack_references_caption_and_vqa():
    item = Item(Path("x.png"), ("c1", "c2", "c3"))
    assert attack_references(item, "caption", 2) == ["c1", "c2"]
    vqa = Item(Path("x.png"), ("Two", "2", "two.", "three", "3", "a dog", "2"), "How many?")
    assert attack_references(vqa, "vqa", 5) == ["2", "3", "dog"]  # normalised, most frequent first
    assert attack_references(vqa, "vqa", 1) == ["2"]


def test_read_dataset(tmp_path):
    (tmp_path / "a.png").write_bytes(b"not read here")
    rows = [{"image": "a.png", "question": "What?", "answers": ["x", "y"]}]
    (tmp_path / "vqa.json").write_text(json.dumps(rows))
    items = read_dataset(tmp_path, "vqa")
    assert items == [Item(tmp_path / "a.png", ("x", "y"), "What?")]
    (tmp_path / "vqa.json").write_text(json.dumps([{"image": "a.png", "question": " ", "answers": ["x"]}]))
    with pytest.raises(ValueError, match="entry 0"):
        read_dataset(tmp_path, "vqa")
    (tmp_path / "captions.json").write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_dataset(tmp_path, "caption")
    with pytest.raises(ValueError, match="task must be"):
        read_dataset(tmp_path, "classify")
