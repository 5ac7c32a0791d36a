"""DecodeBatch: rows join (left-padded) and leave (columns of padding cut) without changing any row's cache."""

from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache

from service.runners.kvbatch import DecodeBatch, PrefilledRow, merge

pytestmark = pytest.mark.unit


def row(length: int, seed: int, layers: int = 2) -> PrefilledRow:
    g = torch.Generator().manual_seed(seed)
    data = [(torch.randn(1, 2, length, 4, generator=g), torch.randn(1, 2, length, 4, generator=g))
            for _ in range(layers)]
    return PrefilledRow(DynamicCache(data), length, length + 3)


def real(batch: DecodeBatch, i: int) -> list[torch.Tensor]:
    """Row ``i``'s keys and values without its padding, per layer."""
    keep = batch.mask[i].bool()
    return [t[i][:, keep] for layer in batch.cache.layers for t in (layer.keys, layer.values)]


def own(r: PrefilledRow) -> list[torch.Tensor]:
    return [t[0] for layer in r.cache.layers for t in (layer.keys, layer.values)]


def test_join_leave_and_split_keep_every_rows_tokens():
    rows = [row(5, 0), row(9, 1), row(3, 2)]
    expected = [own(r) for r in rows]  # DynamicCache keeps these tensors; the batch makes new ones
    batch = DecodeBatch(rows[0], "cpu")
    batch.extend(rows[1:])
    assert len(batch) == 3 and batch.width == 9 and batch.mask.sum(1).tolist() == [5, 9, 3]
    assert batch.positions.tolist() == [8, 12, 6]
    for i in range(3):
        assert all(torch.equal(a, b) for a, b in zip(real(batch, i), expected[i], strict=True))
    batch.keep([2, 0])  # the longest row leaves: 4 columns of padding go with it
    assert batch.width == 5 and batch.mask.sum(1).tolist() == [3, 5] and batch.positions.tolist() == [6, 8]
    assert all(torch.equal(a, b) for a, b in zip(real(batch, 1), expected[0], strict=True))
    one = batch.split(0)
    assert one.width == 3 and all(torch.equal(a, b) for a, b in zip(real(one, 0), expected[2], strict=True))
    joined = merge([one, DecodeBatch(row(7, 3), "cpu")])
    assert joined.width == 7 and joined.mask.sum(1).tolist() == [3, 7]


def test_step_inputs_extend_the_mask_and_advance_positions():
    batch = DecodeBatch(row(4, 0), "cpu")
    batch.extend([row(2, 1)])
    ids, mask, positions = batch.step_inputs(torch.tensor([7, 8]))
    assert ids.tolist() == [[7], [8]] and mask.tolist() == [[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]]
    assert positions.tolist() == [[7], [5]]
    batch.advance(mask)
    assert batch.positions.tolist() == [8, 6] and batch.width == 5
