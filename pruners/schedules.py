"""Schedules: the fraction of the final size target in force at each training step.

A schedule is 0 before ``start_step``, 1 at and after the end of its ramp, and rises without ever
falling in between; the kind sets the shape of the rise (one-shot, linear, cubic, ...).
"""

from __future__ import annotations

import importlib
import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

Schedule = Callable[[int], float]
ScheduleSpec = Mapping[str, Any] | str
DEFAULT = "default"


def _check_int(name: str, value: Any, low: int) -> int:
    """``value`` itself, after checking it is an integer (not a bool) of at least ``low``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"schedule {name} must be an integer >= {low} (got {value!r})")
    return value


def _ramp_window(start_step: int, ramp_steps: int | None, end_step: int | None) -> tuple[int, int]:
    """``(start, ramp length)`` from ``start_step`` and exactly one of ``ramp_steps`` / ``end_step``."""
    _check_int("start_step", start_step, 0)
    if (ramp_steps is None) == (end_step is None):
        raise ValueError("a ramped schedule needs exactly one of ramp_steps (its length) or end_step (where it ends)")
    if end_step is None:
        return start_step, _check_int("ramp_steps", ramp_steps, 0)
    return start_step, _check_int("end_step", end_step, start_step + 1) - start_step


def _rising(level: Callable[[int], float], start: int, ramp: int) -> Schedule:
    """0 before ``start``, ``level(steps since start)`` during the ramp, 1 at and after its end."""

    def schedule(step: int) -> float:
        if step < start:
            return 0.0
        if step >= start + ramp:
            return 1.0
        return level(step - start)

    return schedule


def _shaped(shape: Callable[[float], float], start: int, ramp: int, interval: int) -> Schedule:
    """A ramp following ``shape(progress)``, progress held between multiples of ``interval`` steps."""
    _check_int("interval", interval, 1)
    return _rising(lambda elapsed: shape(elapsed // interval * interval / ramp), start, ramp)


def constant_schedule(start_step: int = 0) -> Schedule:
    """1 from ``start_step`` on: the whole target at once (one-shot pruning), i.e. a ramp of no length."""
    return linear_schedule(start_step, ramp_steps=0)


def linear_schedule(
    start_step: int = 0, ramp_steps: int | None = None, end_step: int | None = None, interval: int = 1
) -> Schedule:
    """The target rises in proportion to the steps taken."""
    return _shaped(lambda p: p, *_ramp_window(start_step, ramp_steps, end_step), interval)


def cubic_schedule(
    start_step: int = 0, ramp_steps: int | None = None, end_step: int | None = None, interval: int = 1
) -> Schedule:
    """``1 - (1 - p)^3`` (Zhu & Gupta 2017): prune fast while the network has redundancy, then slow down."""
    return _shaped(lambda p: 1.0 - (1.0 - p) ** 3, *_ramp_window(start_step, ramp_steps, end_step), interval)


def exponential_schedule(
    start_step: int = 0,
    ramp_steps: int | None = None,
    end_step: int | None = None,
    interval: int = 1,
    rate: float = 5.0,
) -> Schedule:
    """``1 - exp(-rate p)`` scaled to reach exactly 1 at the end: a front-loaded ramp, steeper as ``rate`` grows."""
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 < rate < math.inf:
        raise ValueError(f"exponential schedule rate must be a finite number > 0 (got {rate!r})")
    scale = math.expm1(-rate)
    return _shaped(lambda p: math.expm1(-rate * p) / scale, *_ramp_window(start_step, ramp_steps, end_step), interval)


def cosine_schedule(
    start_step: int = 0, ramp_steps: int | None = None, end_step: int | None = None, interval: int = 1
) -> Schedule:
    """``(1 - cos(pi p)) / 2``: gentle at both ends of the ramp, fastest in the middle."""
    window = _ramp_window(start_step, ramp_steps, end_step)
    return _shaped(lambda p: (1.0 - math.cos(math.pi * p)) / 2.0, *window, interval)


def step_schedule(
    n_steps: int, start_step: int = 0, ramp_steps: int | None = None, end_step: int | None = None
) -> Schedule:
    """``n_steps`` equal increments spread evenly over the ramp, the last at its end (iterative pruning)."""
    _check_int("n_steps", n_steps, 1)
    start, ramp = _ramp_window(start_step, ramp_steps, end_step)
    return _rising(lambda elapsed: elapsed * n_steps // ramp / n_steps, start, ramp)


def linear_ramp(start_step: int = 0, ramp_steps: int = 0) -> Schedule:
    """0 until ``start_step``, then rising linearly to 1 over ``ramp_steps`` steps."""
    return linear_schedule(start_step, ramp_steps)


BUILDERS: dict[str, Callable[..., Schedule]] = {
    "constant": constant_schedule,
    "linear": linear_schedule,
    "cubic": cubic_schedule,
    "exponential": exponential_schedule,
    "cosine": cosine_schedule,
    "step": step_schedule,
}
SCHEDULE_KINDS = tuple(BUILDERS)


def split_callable_path(path: str) -> tuple[str, str]:
    """``(module, function)`` from ``module:function``, without importing anything."""
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ValueError(f"schedule {path!r} must be written 'module:function'")
    return module_name, attr


def load_callable(path: str) -> Callable[..., Any]:
    """Import ``module:function`` (e.g. ``my_project.schedules:warmup``)."""
    module_name, attr = split_callable_path(path)
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"cannot import module {module_name!r} of schedule {path!r}: {err}") from err
    if not callable(getattr(module, attr, None)):
        raise ValueError(f"module {module_name!r} has no callable {attr!r} (schedule {path!r})")
    return getattr(module, attr)


def _checked_callable(path: str) -> Schedule:
    """The callable at ``path``, raising when a value it returns is outside [0, 1]."""
    function = load_callable(path)

    def checked(step: int) -> float:
        value = float(function(step))
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"schedule {path!r} returned {value} at step {step}; it must return a value in [0, 1]")
        return value

    return checked


def _build(spec: Mapping[str, Any]) -> Schedule:
    """The schedule of a ``{kind: ..., ...}`` mapping, its keys checked against the kind's parameters."""
    kind = spec.get("kind")
    if not isinstance(kind, str) or kind not in BUILDERS:
        raise ValueError(
            f"unknown schedule kind {kind!r}; known: {', '.join(SCHEDULE_KINDS)}, or a 'module:function' callable"
        )
    params = inspect.signature(BUILDERS[kind]).parameters
    unknown = sorted(str(key) for key in spec if key != "kind" and key not in params)
    if unknown:
        raise ValueError(f"{kind} schedule has unknown keys {unknown}; allowed: kind, {', '.join(params)}")
    missing = [name for name, p in params.items() if p.default is inspect.Parameter.empty and name not in spec]
    if missing:
        raise ValueError(f"{kind} schedule needs {', '.join(missing)}")
    return BUILDERS[kind](**{key: value for key, value in spec.items() if key != "kind"})


def resolve_schedule(spec: ScheduleSpec) -> Schedule:
    """A schedule from a recipe entry: ``{kind: cubic, start_step: 0, end_step: 1000, ...}`` or ``module:function``.

    The callable takes the step and returns the fraction (in [0, 1]) of the final target in force; it is
    checked on every call, and can be checked over a whole run up front with ``validate_schedule``.
    """
    if isinstance(spec, str):
        return _checked_callable(spec)
    if not isinstance(spec, Mapping):
        raise ValueError(f"a schedule is a mapping with a 'kind' or a 'module:function' string (got {spec!r})")
    if "kind" not in spec:
        raise ValueError(
            f"schedule {dict(spec)} has no 'kind'; give one of {', '.join(SCHEDULE_KINDS)} "
            "(a mapping of axis kinds to schedules is resolved by resolve_axis_schedules)"
        )
    return _build(spec)


def _is_single(spec: Any) -> bool:
    """Whether ``spec`` is one schedule (a string or a mapping with a kind) rather than one per axis."""
    return isinstance(spec, str) or (isinstance(spec, Mapping) and "kind" in spec)


def _axis_entries(spec: Any, kinds: Sequence[str]) -> dict[str, ScheduleSpec]:
    """The entries of a per-axis mapping, after checking each key names an axis kind or ``default``."""
    if not isinstance(spec, Mapping) or not spec:
        raise ValueError(
            f"a schedule is a mapping with a 'kind', a 'module:function' string, or a non-empty mapping of "
            f"axis kinds to schedules (got {spec!r})"
        )
    unknown = sorted(str(key) for key in spec if key not in kinds and key != DEFAULT)
    if unknown:
        raise ValueError(
            f"per-axis schedule names unknown axis kinds {unknown}; allowed keys: {', '.join([*kinds, DEFAULT])} "
            "(a single schedule needs a 'kind' key)"
        )
    return dict(spec)


def _for_entry(name: str, action: Callable[[ScheduleSpec], Any], spec: ScheduleSpec) -> Any:
    """``action(spec)``, naming the per-axis entry in any ValueError it raises."""
    try:
        return action(spec)
    except ValueError as err:
        raise ValueError(f"schedule for {name!r}: {err}") from err


#: the keys of a schedule spec that count steps
STEP_KEYS = ("start_step", "ramp_steps", "end_step", "interval")


def scaled_spec(spec: Any, factor: float) -> Any:
    """A schedule spec (or per-axis mapping of them) with its step counts multiplied by ``factor``.

    The same schedule shape for a run of ``factor`` times the steps; a ``module:function`` schedule
    counts its own steps and is returned as it is. Every count but ``start_step`` stays at least 1, and
    an ``end_step`` stays after its ``start_step``.
    """
    if isinstance(spec, str):
        return spec
    if not _is_single(spec):
        return {name: scaled_spec(entry, factor) for name, entry in spec.items()}
    scaled = dict(spec)
    for key in STEP_KEYS:
        if scaled.get(key):
            scaled[key] = round(scaled[key] * factor) if key == "start_step" else max(1, round(scaled[key] * factor))
    if scaled.get("end_step") is not None:
        scaled["end_step"] = max(scaled["end_step"], scaled.get("start_step", 0) + 1)
    return scaled


def compressed(schedule: Schedule, scale: float) -> Schedule:
    """``schedule`` run ``scale`` times faster: its ramp, written for a whole run, fits one part of it.

    A multi-size run trains each student's part of stage 1 in ``1 / scale`` of the steps; the recipe's
    schedule (start, ramp) keeps its shape within each part.
    """
    return schedule if scale == 1 else (lambda step: schedule(int(step * scale)))


def resolve_axis_schedules(spec: Any, kinds: Sequence[str]) -> dict[str, Schedule]:
    """One schedule per axis kind in ``kinds``.

    ``spec`` is one schedule shared by every kind, or a mapping such as ``{hidden: {...}, ffn: {...},
    default: {...}}``; a kind it does not name takes ``default``, and without one that is an error.
    """
    if _is_single(spec):
        return dict.fromkeys(kinds, resolve_schedule(spec))
    entries = _axis_entries(spec, kinds)
    missing = [kind for kind in kinds if kind not in entries]
    if missing and DEFAULT not in entries:
        raise ValueError(f"per-axis schedule has no entry for {missing}; name every axis kind or add a 'default' entry")
    resolved = {name: _for_entry(name, resolve_schedule, entry) for name, entry in entries.items()}
    return {kind: resolved.get(kind, resolved.get(DEFAULT)) for kind in kinds}


def _check_single(spec: ScheduleSpec) -> None:
    """Check one schedule; a callable's path is checked for form only, as its module may load only at run time."""
    if isinstance(spec, str):
        split_callable_path(spec)
    else:
        resolve_schedule(spec)


def check_schedule_spec(spec: Any, kinds: Sequence[str]) -> None:
    """Check a recipe's schedule entry without importing callables, raising ValueError on the first problem.

    Per-axis mappings may leave kinds out here: whether every gated axis is covered is checked by
    ``resolve_axis_schedules`` once the gated axes are known.
    """
    if _is_single(spec):
        _check_single(spec)
        return
    for name, entry in _axis_entries(spec, kinds).items():
        _for_entry(name, _check_single, entry)


def validate_schedule(schedule: Schedule, steps: int) -> None:
    """Evaluate ``schedule`` at steps 0..``steps`` and raise if a value leaves [0, 1] or ever falls."""
    _check_int("steps", steps, 0)
    previous = 0.0
    for step in range(steps + 1):
        value = float(schedule(step))
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"schedule returned {value} at step {step}; it must return a value in [0, 1]")
        if step and value < previous:
            raise ValueError(
                f"schedule must be monotone non-decreasing: value at step {step} is lower than at step {step - 1} "
                f"({value} < {previous})"
            )
        previous = value
