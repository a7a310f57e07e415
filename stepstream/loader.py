"""Find the ``Stepstream`` application in a user's module (``pkg.mod`` or ``pkg.mod:attr``)."""

from __future__ import annotations

import importlib

from stepstream.client import Stepstream
from stepstream.errors import ConfigError


def load_app(target: str) -> Stepstream:
    """Import ``target`` and return its Stepstream instance.

    Raises:
        ConfigError: the module does not import, or holds no (or several) applications.
    """
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise ConfigError(f"cannot import {module_name!r}: {type(exc).__name__}: {exc}") from exc
    if attr:
        app = getattr(module, attr, None)
        if not isinstance(app, Stepstream):
            raise ConfigError(f"{target!r} is not a Stepstream application")
        return app
    found = [v for v in vars(module).values() if isinstance(v, Stepstream)]
    if len(found) != 1:
        raise ConfigError(f"{module_name!r} holds {len(found)} Stepstream applications; "
                          "name one as module:attribute")
    return found[0]
