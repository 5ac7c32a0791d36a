"""Model runners, one per family: ``clip`` (classify, embeddings) and ``vlm`` (LLaVA, Qwen-VL generation).

The contracts are in ``service.runners.base`` (work kinds and items, outputs, ``BatchRunner`` and
``GenerationRunner``): every runner prepares per request in the worker pool (CPU) and warms up at
load. The CLIP runner's ``run_batch(items, adapters)`` does one forward for a whole mixed batch behind
the engine's dynamic batcher; the VLM runner's ``prefill`` and ``decode`` are driven step by step by
the engine's continuous-batching scheduler, and each of its rows detokenises through a ``RowText``
(``detok``) that the runner makes (``text_of``). The dependency goes one way: the engine imports the
runners, never the reverse.
"""
