"""Choose the engine from `ENGINE`: `acestep` (default), `null`, or `module.path:factory`."""

from __future__ import annotations

import importlib
from typing import cast

from acefarm.infra.settings import Settings
from gpu_consumer.engine.base import Engine


def load_engine(settings: Settings) -> Engine:
    """Build the engine named by `settings.engine`; a `module:factory` is called with the settings.

    Raises `ValueError` for a name that is neither built in nor an importable `module:factory`.
    """
    name = settings.engine.strip()
    if name == "acestep":
        from gpu_consumer.engine.acestep import AceStepEngine
        from gpu_consumer.engine.adapter_cache import LoraCache

        return AceStepEngine(settings, adapter_resolver=LoraCache().resolve)
    if name == "null":
        from gpu_consumer.engine.null import NullEngine

        return NullEngine(settings)
    module_name, sep, attr = name.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"ENGINE={name!r}: expected 'acestep', 'null' or 'module.path:factory'")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"ENGINE={name!r} cannot be imported: {error}") from error
    return cast(Engine, factory(settings))
