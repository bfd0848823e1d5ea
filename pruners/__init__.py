"""Pure-torch pruning pieces: gates, importance scores and size accounting."""

from pruners.gates import FixedGate, Gate, GateSet, HardConcreteGate
from pruners.importance import magnitude_importance
from pruners.size import count_parameters, tensor_axis_map

__all__ = [
    "FixedGate",
    "Gate",
    "GateSet",
    "HardConcreteGate",
    "count_parameters",
    "magnitude_importance",
    "tensor_axis_map",
]
