"""Pure-torch structural re-parameterisation: axes, masked normalisation and the fold maths.

Nothing here imports transformers; family adapters in ``compress`` describe a model as axes and
this package does the rest.
"""

from reparam.axes import Axis, GateSite, TensorDim, layer_axis_name
from reparam.fold import FoldResult, fold_state_dict, kept_indices
from reparam.gating import install_gates, remove_masked_norms
from reparam.hooks import HookSet
from reparam.masked_norm import MaskedLayerNorm

__all__ = [
    "Axis",
    "FoldResult",
    "GateSite",
    "HookSet",
    "MaskedLayerNorm",
    "TensorDim",
    "fold_state_dict",
    "install_gates",
    "kept_indices",
    "layer_axis_name",
    "remove_masked_norms",
]
