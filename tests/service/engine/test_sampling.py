"""RowSampler: greedy, temperature with top_p, seeds, penalties, and non-finite scores."""

from __future__ import annotations

import pytest
import torch

from service.engine.sampling import NonFiniteScores, RowSampler, SamplingParams

pytestmark = pytest.mark.unit

SCORES = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0])


def draws(params: SamplingParams, n: int = 200) -> list[int]:
    sampler = RowSampler(params)
    return [sampler.choose(SCORES) for _ in range(n)]


def test_greedy_and_top_p_keep_the_nucleus_only():
    assert set(draws(SamplingParams(8))) == {0}
    assert set(draws(SamplingParams(8, temperature=1.0, top_p=0.3, seed=1))) == {0}  # p(0) = 0.56 >= 0.3
    # probabilities 0.56, 0.21, 0.13, 0.08, 0.03: the nucleus is the fewest tokens whose mass reaches top_p
    assert set(draws(SamplingParams(8, temperature=1.0, top_p=0.7, seed=1))) == {0, 1}
    assert set(draws(SamplingParams(8, temperature=1.0, top_p=0.8, seed=1))) == {0, 1, 2}
    assert len(set(draws(SamplingParams(8, temperature=2.0, seed=1)))) == 5


def test_a_seed_reproduces_and_another_seed_differs():
    params = SamplingParams(8, temperature=1.5, seed=7)
    assert draws(params) == draws(params)
    assert draws(params) != draws(SamplingParams(8, temperature=1.5, seed=8))


def test_penalties_push_repeated_tokens_down():
    sampler = RowSampler(SamplingParams(8, frequency_penalty=2.0))
    first = sampler.choose(SCORES)
    sampler.record(first)
    assert first == 0 and sampler.choose(SCORES) == 1  # 2.0 - 2.0 < 1.0


def test_non_finite_scores_raise_for_that_row():
    with pytest.raises(NonFiniteScores):
        RowSampler(SamplingParams(8)).choose(torch.tensor([0.0, float("nan")]))
    with pytest.raises(NonFiniteScores):
        RowSampler(SamplingParams(8, temperature=1.0, seed=0)).choose(torch.tensor([float("inf"), 0.0]))
