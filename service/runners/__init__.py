"""Model runners, one per family: ``clip`` (classify, embeddings) and ``vlm`` (LLaVA, Qwen-VL generation).

The contract: ``prepare*`` per request in the worker pool (CPU), ``run_batch(items, adapters)`` in
the model thread with one forward for the whole mixed batch, ``warmup(adapters)`` at load.
"""
