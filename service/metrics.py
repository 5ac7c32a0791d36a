"""Prometheus metrics, declared once per server (own registry, so tests and apps stay isolated).

Names, labels and buckets are a contract: deploy/ (Grafana, Prometheus) reads them. Label values
are bounded: endpoints are route templates, statuses HTTP codes, models the served names,
modes robust|standard, ops load|swap|remove, results ok|error, reasons error codes.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST


def geometric(start: float, factor: float, count: int) -> tuple[float, ...]:
    return tuple(round(start * factor ** i, 10) for i in range(count))


# 0.1 ms .. ~105 s, factor 2: covers a tiny-model forward and a long generation
DURATION_BUCKETS = geometric(0.0001, 2.0, 21)
BATCH_BUCKETS = tuple(float(2 ** i) for i in range(13))  # 1 .. 4096
CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    """All radapt_* metrics of one server."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.requests = Counter("radapt_requests", "HTTP requests by endpoint and status",
                                ["endpoint", "status"], registry=r)
        self.request_duration = Histogram("radapt_request_duration_seconds", "HTTP request latency",
                                          ["endpoint"], buckets=DURATION_BUCKETS, registry=r)
        self.queue_duration = Histogram("radapt_queue_duration_seconds", "time a work item waited for its batch",
                                        ["model"], buckets=DURATION_BUCKETS, registry=r)
        self.inference_duration = Histogram("radapt_inference_duration_seconds", "forward time of one batch",
                                            ["model"], buckets=DURATION_BUCKETS, registry=r)
        self.batch_size = Histogram("radapt_batch_size", "work items per forward", ["model"],
                                    buckets=BATCH_BUCKETS, registry=r)
        self.queue_depth = Gauge("radapt_queue_depth", "work items waiting", ["model"], registry=r)
        self.running_sequences = Gauge("radapt_running_sequences", "generations decoding right now", ["model"],
                                       registry=r)
        self.generated_tokens = Counter("radapt_generated_tokens", "tokens generated", ["model"], registry=r)
        self.time_to_first_token = Histogram("radapt_time_to_first_token_seconds",
                                             "prefill time of a generation (its first token)", ["model"],
                                             buckets=DURATION_BUCKETS, registry=r)
        self.robust_requests = Counter("radapt_robust_requests", "work items by R-Adapt mode",
                                       ["model", "mode"], registry=r)
        self.adapter_ops = Counter("radapt_adapter_operations", "adapter loads, swaps and removals", ["op"],
                                   registry=r)
        self.adapter_op_duration = Histogram("radapt_adapter_operation_duration_seconds",
                                             "time of an adapter operation", ["op"], buckets=DURATION_BUCKETS,
                                             registry=r)
        self.adapters_loaded = Gauge("radapt_adapters_loaded", "adapters available per model", ["model"],
                                     registry=r)
        self.model_load_duration = Gauge("radapt_model_load_duration_seconds",
                                         "time to load a model, inject R-Adapt and build its default adapter",
                                         ["model"], registry=r)
        self.adapter_store_up = Gauge("radapt_adapter_store_up", "1 when the last adapter-store sync reached "
                                      "the store, 0 when it did not (what is loaded keeps serving)", registry=r)
        self.adapter_store_syncs = Counter("radapt_adapter_store_syncs", "adapter-store sync rounds by result",
                                           ["result"], registry=r)
        self.adapter_store_refused = Gauge("radapt_adapter_store_refused", "adapters in the store this replica "
                                           "refuses (corrupt, unreadable or not fitting its model)", registry=r)
        self.attacks = Counter("radapt_attacks", "attacks crafted on the server (playground), by result: ok, "
                               "error, cancelled", ["model", "result"], registry=r)
        self.errors = Counter("radapt_errors", "errors answered, by reason", ["reason"], registry=r)

    def count_error(self, reason: str) -> None:
        self.errors.labels(reason=reason).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
