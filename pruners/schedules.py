"""Schedules: the fraction of the final size target in force at each training step."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

Schedule = Callable[[int], float]


def linear_ramp(start_step: int = 0, ramp_steps: int = 0) -> Schedule:
    """0 until ``start_step``, then rising linearly to 1 over ``ramp_steps`` steps."""

    def schedule(step: int) -> float:
        if step < start_step:
            return 0.0
        if ramp_steps <= 0:
            return 1.0
        return min(1.0, (step - start_step) / ramp_steps)

    return schedule


def load_callable(path: str) -> Callable[..., Any]:
    """Import ``module:function`` (e.g. ``my_project.schedules:warmup``)."""
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ValueError(f"schedule {path!r} must be written 'module:function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"cannot import module {module_name!r} of schedule {path!r}: {err}") from err
    if not callable(getattr(module, attr, None)):
        raise ValueError(f"module {module_name!r} has no callable {attr!r} (schedule {path!r})")
    return getattr(module, attr)


def resolve_schedule(spec: Mapping[str, Any] | str) -> Schedule:
    """A schedule from a recipe entry: ``{kind: linear, ...}`` or a ``module:function`` callable.

    The callable takes the step and returns the fraction (in [0, 1]) of the final target in force.
    """
    if isinstance(spec, str):
        function = load_callable(spec)

        def checked(step: int) -> float:
            value = float(function(step))
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"schedule {spec!r} returned {value} at step {step}; it must return a value in [0, 1]")
            return value

        return checked
    kind = spec.get("kind", "linear")
    if kind != "linear":
        raise ValueError(f"unknown schedule kind {kind!r}; known: linear, or a 'module:function' callable")
    return linear_ramp(spec.get("start_step", 0), spec.get("ramp_steps", 0))
