"""The engine: per-model workers (CLIP dynamic batcher, continuous-batching generation scheduler),
admission and deadlines, and the task calls, usable without HTTP.

It builds the runners (``models``) and drives them through the contracts of ``service.runners.base``;
the runners import nothing from here. The one contract of its own is ``models.Worker``: what the
engine needs from a model's batcher or scheduler.
"""

from service.engine.engine import Engine, ServedModel

__all__ = ["Engine", "ServedModel"]
