"""Model runners, one per family: ``clip`` (classify, embeddings) and ``vlm`` (LLaVA, Qwen-VL generation).

The contracts are in ``service.engine.work``: every runner prepares per request in the worker pool
(CPU) and warms up at load. The CLIP runner's ``run_batch(items, adapters)`` does one forward for a
whole mixed batch behind the dynamic batcher; the VLM runner's ``prefill`` and ``decode`` are driven
step by step by the continuous-batching scheduler (``service.engine.scheduler``).
"""
