"""The engine: per-model workers (CLIP dynamic batcher, continuous-batching generation scheduler),
admission and deadlines, and the task calls, usable without HTTP."""

from service.engine.engine import Engine, ServedModel

__all__ = ["Engine", "ServedModel"]
