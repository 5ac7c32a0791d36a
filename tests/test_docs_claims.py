"""Finding 10: robustness and exactness claims in the docs say what is true, with their conditions."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import adapters.method.config

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[1]


def text_of(path: str) -> str:
    return re.sub(r"\s+", " ", (ROOT / path).read_text())


@pytest.mark.parametrize("source", ["README.md", "adapters/method/config.py"])
def test_filter_energy_claim_is_qualified_by_adaptive_attacks(source):
    text = text_of(source)
    assert "removes most of the energy of L-inf attacks," not in text
    assert "adaptive" in text and "38%" in text


@pytest.mark.parametrize("source", ["README.md", "adapters/method/config.py"])
def test_alpha_claim_names_the_attention_branch_only(source):
    text = text_of(source)
    assert "removes half of block 0's sensitivity" not in text and "removes half of block-0's" not in text
    assert "attention branch" in text


def test_batching_exactness_is_claimed_for_float32_only():
    text = text_of("docs/api.md")
    assert "Outputs equal those of the same requests sent one at a time" not in text
    assert "In float32, outputs equal those" in text and "bfloat16" in text


def test_the_module_docstring_is_the_checked_text():
    assert "attention branch only" in " ".join((adapters.method.config.__doc__ or "").split())
