"""Rows that decode together: one left-padded KV cache that rows join and leave at any step.

TGI's first design on transformers models, on transformers' own ``DynamicCache``: every layer holds
``keys, values: [B, H, W, D]``; row ``b`` owns the last ``lengths[b]`` columns and the columns
before them are padding, masked out by ``mask: [B, W]``. A row that joins is padded on the left to
the batch's width (or the batch to the row's), a row that leaves is dropped with ``index_select``,
and columns that became padding for every row are cut off, so the width is always that of the
longest row. Positions are per row (``next_position``), so padding never shifts a row's RoPE.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer


class UnsupportedCache(TypeError):
    """The model's cache cannot be joined and filtered row by row (sliding-window or static layers)."""


@dataclass
class PrefilledRow:
    """One prompt after its prefill: a batch-of-one cache of ``length`` tokens."""

    cache: DynamicCache
    length: int
    next_position: int  # RoPE position of the next token (LLaVA: length; Qwen-VL: length + rope delta)


def _layers(cache: DynamicCache) -> list[DynamicLayer]:
    layers = list(cache.layers)
    for layer in layers:
        if type(layer) is not DynamicLayer:
            raise UnsupportedCache("continuous batching needs full-attention dynamic caches, "
                                   f"got {type(layer).__name__}")
    return layers


def _pad_left(t: torch.Tensor, width: int) -> torch.Tensor:
    """``[B, H, L, D]`` -> ``[B, H, width, D]`` with zeros in front."""
    extra = width - t.shape[-2]
    return t if extra == 0 else F.pad(t, (0, 0, extra, 0))


class DecodeBatch:
    """``mask: [B, W]`` (1 = a real token), ``positions: [B]`` (next RoPE position per row)."""

    def __init__(self, row: PrefilledRow, device: torch.device | str) -> None:
        _layers(row.cache)
        self.cache = row.cache
        self.mask = torch.ones(1, row.length, dtype=torch.long, device=device)
        self.positions = torch.tensor([row.next_position], dtype=torch.long, device=device)

    def __len__(self) -> int:
        return int(self.mask.shape[0])

    @property
    def width(self) -> int:
        return int(self.mask.shape[1])

    def extend(self, rows: list[PrefilledRow]) -> None:
        """Append ``rows`` (in order) after the current ones."""
        if rows:
            merge([self, *(DecodeBatch(r, self.mask.device) for r in rows)])

    def keep(self, rows: list[int]) -> None:
        """Keep only ``rows`` (indices, in that order) and cut columns that are padding in all of them."""
        if rows == list(range(len(self))):
            return
        index = torch.tensor(rows, dtype=torch.long, device=self.mask.device)
        mask = self.mask.index_select(0, index)
        real = mask.any(dim=0)
        start = int(real.nonzero()[0]) if bool(real.any()) else mask.shape[1]
        for layer in _layers(self.cache):
            layer.keys = layer.keys.index_select(0, index)[:, :, start:]
            layer.values = layer.values.index_select(0, index)[:, :, start:]
        self.mask = mask[:, start:]
        self.positions = self.positions.index_select(0, index)

    def split(self, row: int) -> "DecodeBatch":
        """A new batch of one holding a copy of row ``row`` (for isolating a failing row)."""
        cache = DynamicCache()
        one = DecodeBatch.__new__(DecodeBatch)
        mask, width = self.mask[row:row + 1], self.width
        start = int(mask[0].nonzero()[0])
        for layer in _layers(self.cache):  # [:width]: a failed forward may have grown some layers already
            new = DynamicLayer()
            new.lazy_initialization(layer.keys, layer.values)
            new.keys = layer.keys[row:row + 1, :, start:width].clone()
            new.values = layer.values[row:row + 1, :, start:width].clone()
            cache.layers.append(new)
        one.cache, one.mask, one.positions = cache, mask[:, start:].clone(), self.positions[row:row + 1].clone()
        return one

    def step_inputs(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``tokens: [B]`` (each row's newest token) -> (input_ids [B, 1], mask [B, W + 1], positions [B, 1])."""
        mask = torch.cat([self.mask, self.mask.new_ones(len(self), 1)], dim=1)
        return tokens.view(-1, 1), mask, self.positions.view(-1, 1)

    def advance(self, mask: torch.Tensor) -> None:
        """After a forward with ``step_inputs``: the cache grew by one column for every row."""
        self.mask = mask
        self.positions = self.positions + 1


def merge(batches: list[DecodeBatch]) -> DecodeBatch:
    """Join batches (in order) into the first one, padding each on the left to the widest."""
    first = batches[0]
    if len(batches) == 1:
        return first
    width = max(b.width for b in batches)
    per_batch = [_layers(b.cache) for b in batches]
    for i, layer in enumerate(per_batch[0]):
        layer.keys = torch.cat([_pad_left(layers[i].keys, width) for layers in per_batch])
        layer.values = torch.cat([_pad_left(layers[i].values, width) for layers in per_batch])
    first.mask = torch.cat([F.pad(b.mask, (width - b.width, 0)) for b in batches])
    first.positions = torch.cat([b.positions for b in batches])
    return first
