"""The engine: per-model dynamic batchers, admission, and task calls usable without HTTP."""

from service.engine.engine import Engine, ServedModel

__all__ = ["Engine", "ServedModel"]
