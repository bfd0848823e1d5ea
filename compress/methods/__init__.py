"""Pruning methods by recipe name (``prune.method``): the registry, and the bundled methods registering in it.

Importing this package registers ``l0``, ``magnitude`` / ``taylor`` / ``random`` (scheduled top-k),
``wid`` (alias ``compactor``) and ``layer-drop``; it imports no torch. ``method_entry(name).load()``
gives a method's class.
"""

from compress.methods.registry import MethodEntry, method_entry, method_names, register_method, settings_fragments

# The bundled methods register themselves on import (each package's __init__ is light).
from compress.methods import l0, layer_drop, scheduled, wid  # noqa: E402,F401  isort: skip

__all__ = ["MethodEntry", "method_entry", "method_names", "register_method", "settings_fragments"]
