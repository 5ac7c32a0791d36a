"""Read the server's /metrics (Prometheus text) into numbers the report can difference."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(client: httpx.AsyncClient, path: str = "/metrics") -> Samples:
    """Every sample of /metrics keyed by (sample name, sorted labels); empty when unavailable."""
    try:
        response = await client.get(path)
    except httpx.HTTPError:
        return {}
    if response.status_code != 200:
        return {}
    out: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = float(s.value)
    return out


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum of ``name`` over the samples whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, lab), v in samples.items() if n == name and want <= set(lab))


def delta_mean(before: Samples, after: Samples, histogram: str, **labels: str) -> float | None:
    """Mean of the histogram's observations between two scrapes (None if none were made)."""
    count = total(after, histogram + "_count", **labels) - total(before, histogram + "_count", **labels)
    if count <= 0:
        return None
    return (total(after, histogram + "_sum", **labels) - total(before, histogram + "_sum", **labels)) / count
