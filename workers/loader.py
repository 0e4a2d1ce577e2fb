"""Finding the app object from ``module:attribute``, as uvicorn and Celery do."""

from __future__ import annotations

import importlib
import os
import sys

from workers.app import App
from workers.errors import ConfigError


def load_app(path: str) -> App:
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(
            f"APP must look like 'module:attribute' (e.g. shop.app:app), got {path!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise ConfigError(
                f"cannot import {module_name!r}: no such module (run from the directory that "
                "contains it, or install it)"
            ) from None
        raise
    try:
        app = getattr(module, attr)
    except AttributeError:
        raise ConfigError(f"module {module_name!r} has no attribute {attr!r}") from None
    if not isinstance(app, App):
        raise ConfigError(f"{path} is a {type(app).__name__}, not a workers.App")
    return app
