"""Pruning schedules: the shape of every kind, quantisation, per-axis resolution, checks and recipes."""

from __future__ import annotations

import pytest

import compress
from pruners.schedules import (
    SCHEDULE_KINDS,
    check_schedule_spec,
    resolve_axis_schedules,
    resolve_schedule,
    validate_schedule,
)

KINDS = ["hidden", "heads", "ffn"]


def values(spec: dict, steps: list[int]) -> list[float]:
    schedule = resolve_schedule(spec)
    return [schedule(step) for step in steps]


@pytest.fixture
def mymod(tmp_path, monkeypatch):
    """A module ``mymod`` importable for this test only, with a falling and an out-of-range schedule."""
    (tmp_path / "mymod.py").write_text(
        "def fn(step):\n    return 0.5 if step == 3 else min(1.0, step / 10)\n\n"
        "def too_big(step):\n    return 2.0\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))


def test_constant_is_one_shot_at_start_step():
    assert values({"kind": "constant", "start_step": 5}, [0, 4, 5, 6, 1000]) == [0.0, 0.0, 1.0, 1.0, 1.0]
    assert values({"kind": "constant"}, [0, 1]) == [1.0, 1.0]


def test_linear_values():
    spec = {"kind": "linear", "start_step": 10, "ramp_steps": 20}
    assert values(spec, [0, 9, 10, 15, 20, 29, 30, 100]) == [0.0, 0.0, 0.0, 0.25, 0.5, 0.95, 1.0, 1.0]


def test_cubic_values():
    spec = {"kind": "cubic", "start_step": 10, "ramp_steps": 100}
    # progress 0, 0.25, 0.5, 0.75: 1 - (1 - p)^3 = 0, 1 - 0.421875, 1 - 0.125, 1 - 0.015625
    steps = [9, 10, 35, 60, 85, 110, 200]
    assert values(spec, steps) == [0.0, 0.0, 0.578125, 0.875, 0.984375, 1.0, 1.0]


def test_cosine_values():
    spec = {"kind": "cosine", "ramp_steps": 100}
    # (1 - cos(pi / 4)) / 2 = (1 - 0.70710678) / 2
    assert values(spec, [0, 25, 50, 100]) == pytest.approx([0.0, 0.14644661, 0.5, 1.0])


def test_exponential_endpoints_midpoint_and_monotonicity():
    spec = {"kind": "exponential", "ramp_steps": 100}
    # rate 5 at p = 0.5: (1 - e^-2.5) / (1 - e^-5) = 0.91791500 / 0.99326205
    assert values(spec, [0, 50, 100, 150]) == pytest.approx([0.0, 0.92414182, 1.0, 1.0])
    assert resolve_schedule(spec)(99) < 1.0
    # rate 1 at p = 0.5: (1 - e^-0.5) / (1 - e^-1) = 0.39346934 / 0.63212056
    assert values({**spec, "rate": 1}, [50]) == pytest.approx([0.62245933])
    validate_schedule(resolve_schedule({**spec, "rate": 40.0}), 120)


def test_step_rises_in_equal_increments():
    spec = {"kind": "step", "n_steps": 4, "ramp_steps": 100}
    steps = [0, 24, 25, 49, 50, 74, 75, 99, 100]
    assert values(spec, steps) == [0.0, 0.0, 0.25, 0.25, 0.5, 0.5, 0.75, 0.75, 1.0]
    # 3 increments over 10 steps land on the first step at or past 10/3, 20/3 and 10
    thirds = values({"kind": "step", "n_steps": 3, "end_step": 10}, [3, 4, 6, 7, 9, 10])
    assert thirds == pytest.approx([0.0, 1 / 3, 1 / 3, 2 / 3, 2 / 3, 1.0])


def test_interval_holds_the_value_between_multiples_of_it():
    linear = {"kind": "linear", "ramp_steps": 100, "interval": 10}
    assert values(linear, [0, 9, 10, 19, 95, 100]) == [0.0, 0.0, 0.1, 0.1, 0.9, 1.0]
    uneven = {**linear, "interval": 30}
    held = values(uneven, [29, 30, 59, 60, 90, 99, 100])
    assert held == [0.0, 0.3, 0.3, 0.6, 0.9, 0.9, 1.0], "the end reaches 1 even off the interval grid"
    cubic = {"kind": "cubic", "start_step": 10, "ramp_steps": 100, "interval": 25}
    assert values(cubic, [34, 35, 59, 60]) == [0.0, 0.578125, 0.578125, 0.875]


@pytest.mark.parametrize("kind", ["linear", "cubic", "exponential", "cosine"])
def test_end_step_is_start_step_plus_ramp_steps(kind):
    by_ramp = resolve_schedule({"kind": kind, "start_step": 7, "ramp_steps": 50, "interval": 3})
    by_end = resolve_schedule({"kind": kind, "start_step": 7, "end_step": 57, "interval": 3})
    assert [by_ramp(s) for s in range(70)] == [by_end(s) for s in range(70)]


@pytest.mark.parametrize(
    "spec",
    [
        {"kind": "constant", "start_step": 3},
        {"kind": "linear", "start_step": 2, "ramp_steps": 0},
        {"kind": "cubic", "start_step": 2, "end_step": 41, "interval": 4},
        {"kind": "exponential", "ramp_steps": 33, "rate": 0.5},
        {"kind": "cosine", "ramp_steps": 37},
        {"kind": "step", "n_steps": 7, "ramp_steps": 5},
    ],
)
def test_every_kind_starts_at_0_ends_at_1_and_never_falls(spec):
    schedule = resolve_schedule(spec)
    validate_schedule(schedule, 60)
    assert schedule(0) == 0.0 and schedule(60) == 1.0


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"kind": "bogus"}, "unknown schedule kind 'bogus'; known: constant, linear, cubic, exponential, cosine, step"),
        ({"kind": ["linear"]}, "unknown schedule kind"),
        ({"kind": "linear", "ramp_steps": 10, "rate": 2}, r"unknown keys \['rate'\]; allowed: kind, start_step, ramp"),
        ({"kind": "constant", "ramp_steps": 10}, r"unknown keys \['ramp_steps'\]; allowed: kind, start_step$"),
        ({"kind": "step", "ramp_steps": 10, "interval": 2}, r"unknown keys \['interval'\].*n_steps"),
        ({"kind": "step", "ramp_steps": 10}, "step schedule needs n_steps"),
        ({"kind": "step", "ramp_steps": 10, "n_steps": 0}, "n_steps must be an integer >= 1"),
        ({"kind": "linear", "ramp_steps": 10, "end_step": 10}, "exactly one of ramp_steps .* or end_step"),
        ({"kind": "cubic", "start_step": 5}, "exactly one of ramp_steps"),
        ({"kind": "cubic", "start_step": 5, "end_step": 5}, "end_step must be an integer >= 6"),
        ({"kind": "linear", "start_step": -1, "ramp_steps": 10}, "start_step must be an integer >= 0"),
        ({"kind": "linear", "ramp_steps": -3}, "ramp_steps must be an integer >= 0"),
        ({"kind": "linear", "ramp_steps": 2.5}, r"ramp_steps must be an integer >= 0 \(got 2.5\)"),
        ({"kind": "linear", "start_step": True, "ramp_steps": 2}, "start_step must be an integer"),
        ({"kind": "linear", "ramp_steps": 10, "interval": 0}, "interval must be an integer >= 1"),
        ({"kind": "exponential", "ramp_steps": 10, "rate": 0}, "rate must be a finite number > 0"),
        ({"kind": "exponential", "ramp_steps": 10, "rate": "fast"}, "rate must be a finite number > 0"),
        ({"start_step": 0, "ramp_steps": 10}, "has no 'kind'; give one of constant, linear"),
        (5, "a schedule is a mapping with a 'kind' or a 'module:function' string"),
        ("no_colon", "must be written 'module:function'"),
    ],
)
def test_bad_specs_are_clear_errors(spec, message):
    with pytest.raises(ValueError, match=message):
        resolve_schedule(spec)


def test_one_spec_is_shared_by_every_axis():
    schedules = resolve_axis_schedules({"kind": "cubic", "ramp_steps": 100}, KINDS)
    assert list(schedules) == KINDS
    assert schedules["hidden"] is schedules["ffn"] and schedules["heads"](50) == 0.875
    assert list(resolve_axis_schedules("math:tanh", KINDS)) == KINDS


def test_per_axis_schedules_with_a_default(mymod):
    spec = {
        "hidden": {"kind": "constant", "start_step": 50},
        "ffn": "mymod:fn",
        "default": {"kind": "linear", "ramp_steps": 100},
    }
    schedules = resolve_axis_schedules(spec, KINDS)
    assert [schedules[k](50) for k in KINDS] == [1.0, 0.5, 1.0]
    named = resolve_axis_schedules({k: {"kind": "step", "n_steps": 2, "ramp_steps": 10} for k in KINDS}, KINDS)
    assert [named[k](5) for k in KINDS] == [0.5, 0.5, 0.5]


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"hidden": {"kind": "constant"}}, r"no entry for \['heads', 'ffn'\]; name every axis kind or add a 'default'"),
        ({"neurons": "m:f"}, r"unknown axis kinds \['neurons'\]; allowed keys: hidden, heads, ffn, default"),
        ({"default": {"kind": "cubic"}}, "schedule for 'default': a ramped schedule needs exactly one of ramp_steps"),
        ({"ffn": {"kind": "bogus"}, "default": {"kind": "constant"}}, "schedule for 'ffn': unknown schedule kind"),
        ({"ffn": {"hidden": {"kind": "constant"}}, "default": "math:tanh"}, "schedule for 'ffn': .* has no 'kind'"),
        ({}, "non-empty mapping of axis kinds to schedules"),
        ([1, 2], "non-empty mapping of axis kinds to schedules"),
    ],
)
def test_bad_per_axis_specs_are_clear_errors(spec, message):
    with pytest.raises(ValueError, match=message):
        resolve_axis_schedules(spec, KINDS)


def test_checking_a_spec_does_not_import_callables():
    check_schedule_spec("not_installed_yet:warmup", KINDS)
    check_schedule_spec({"hidden": "not_installed_yet:warmup", "heads": {"kind": "constant"}}, KINDS)
    with pytest.raises(ValueError, match="schedule for 'hidden': schedule 'nocolon' must be written"):
        check_schedule_spec({"hidden": "nocolon"}, KINDS)
    with pytest.raises(ValueError, match="cannot import module 'not_installed_yet'"):
        resolve_axis_schedules({"hidden": "not_installed_yet:warmup", "default": {"kind": "constant"}}, KINDS)


def test_validate_schedule_catches_a_falling_or_out_of_range_callable(mymod):
    schedule = resolve_schedule("mymod:fn")
    assert [schedule(s) for s in (2, 3, 4)] == [0.2, 0.5, 0.4], "resolving does not pre-validate"
    validate_schedule(schedule, 2)
    with pytest.raises(ValueError, match="must be monotone non-decreasing: value at step 4 is lower than at step 3"):
        validate_schedule(schedule, 20)
    with pytest.raises(ValueError, match=r"returned 2.0 at step 0; it must return a value in \[0, 1\]"):
        validate_schedule(resolve_schedule("mymod:too_big"), 5)
    from mymod import too_big

    with pytest.raises(ValueError, match=r"returned 2.0 at step 0; it must return a value in \[0, 1\]"):
        validate_schedule(too_big, 5)
    with pytest.raises(ValueError, match="steps must be an integer >= 0"):
        validate_schedule(schedule, -1)


def test_recipe_accepts_every_schedule_the_resolver_does():
    recipe = compress.load_recipe("bert-l0")
    cubic = {"kind": "cubic", "start_step": 0, "end_step": 100}
    assert recipe.override({"prune.schedule": cubic})["prune.schedule"] == cubic
    # Per-axis schedules pass the same checks (callables are not imported at validation time);
    # the l0 method itself ramps one total target, so its recipes refuse them (tests/test_recipe.py).
    per_axis = {"ffn": {"kind": "step", "n_steps": 4, "ramp_steps": 100}, "default": "not_installed_yet:warmup"}
    check_schedule_spec(per_axis, list(compress.recipe.AXIS_KINDS))
    assert all(kind in SCHEDULE_KINDS for kind in ("constant", "linear", "cubic", "exponential", "cosine", "step"))


@pytest.mark.parametrize(
    "schedule, message",
    [
        ({"kind": "bogus"}, "'prune.schedule' is invalid: unknown schedule kind 'bogus'; known: constant, linear, cub"),
        ({"kind": "linear", "ramp_steps": 10, "rate": 1}, r"unknown keys \['rate'\]"),
        ({"neurons": {"kind": "constant"}}, r"unknown axis kinds \['neurons'\]; allowed keys: hidden, heads, head_width, ffn, att"),
        ({"heads": {"kind": "cubic", "start_step": 10, "end_step": 10}}, "schedule for 'heads': .*end_step"),
    ],
)
def test_recipe_rejects_bad_schedules(schedule, message):
    with pytest.raises(compress.RecipeError, match=message):
        compress.load_recipe("bert-l0").override({"prune.schedule": schedule})
