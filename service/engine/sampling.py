"""Per-row sampling for the generation scheduler: every row of a decoding batch has its own settings.

    params = SamplingParams(max_tokens=32, temperature=0.7, top_p=0.9, seed=1)
    sampler = RowSampler(params)
    token = sampler.choose(logits_row)        # logits_row: [V] float32

Greedy rows (``temperature == 0``) take the argmax; sampled rows scale by the temperature, keep the
smallest set of tokens whose probability reaches ``top_p`` and draw from their own ``torch.Generator``
(seeded from ``seed`` when given, so a seeded request is reproducible whatever else is batched with
it). OpenAI's presence and frequency penalties subtract ``presence * [count > 0] + frequency * count``
from the logits of tokens the row has already generated. A row whose scores are not finite raises
``NonFiniteScores``: the scheduler fails that row alone.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import torch

MIN_TEMPERATURE = 0.01  # below this, exp(logit / t) overflows float32 for ordinary logits: use 0 (greedy)
MAX_STOP_STRINGS = 4  # as OpenAI
MAX_STOP_CHARS = 64


class NonFiniteScores(ArithmeticError):
    """The model's scores for a row contain NaN or infinity (a numeric failure of that row only)."""


@dataclass(frozen=True)
class SamplingParams:
    """What one request asks of decoding. Validated by the engine before it is queued."""

    max_tokens: int
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    ignore_eos: bool = False  # vLLM's extension: decode max_tokens whatever the model says (benchmarks)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    @property
    def penalised(self) -> bool:
        return self.presence_penalty != 0.0 or self.frequency_penalty != 0.0


class RowSampler:
    """Chooses the next token of one row; keeps the row's token counts for the penalties."""

    def __init__(self, params: SamplingParams) -> None:
        self.params = params
        self.generator: torch.Generator | None = None
        if not params.greedy:
            self.generator = torch.Generator()
            self.generator.manual_seed(params.seed if params.seed is not None else secrets.randbits(63))
        self._counts: dict[int, int] = {}

    @property
    def plain_greedy(self) -> bool:
        """Argmax of the raw scores: the scheduler batches these rows into one argmax."""
        return self.params.greedy and not self.params.penalised

    def choose(self, scores: torch.Tensor) -> int:
        """``scores: [V]`` float32 (any device) -> the next token id."""
        p = self.params
        if p.penalised and self._counts:
            ids = torch.tensor(list(self._counts), device=scores.device)
            counts = torch.tensor(list(self._counts.values()), dtype=scores.dtype, device=scores.device)
            scores = scores.clone()
            scores[ids] -= p.presence_penalty + p.frequency_penalty * counts
        if not bool(torch.isfinite(scores).all()):
            raise NonFiniteScores("the model produced non-finite scores for this request")
        if p.greedy:
            return int(scores.argmax())
        probs = torch.softmax(scores.float().cpu() / p.temperature, dim=-1)
        if p.top_p < 1.0:
            sorted_probs, order = probs.sort(descending=True)
            # keep a token while the mass before it is below top_p (the first token is always kept)
            keep = sorted_probs.cumsum(0) - sorted_probs < p.top_p
            probs = torch.zeros_like(probs).scatter_(0, order[keep], sorted_probs[keep])
        total = float(probs.sum())
        if not total > 0.0 or total != total:
            raise NonFiniteScores("sampling probabilities are degenerate for this request")
        return int(torch.multinomial(probs / total, 1, generator=self.generator))

    def record(self, token: int) -> None:
        if self.params.penalised:
            self._counts[token] = self._counts.get(token, 0) + 1
