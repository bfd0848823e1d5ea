"""Pure-torch structural re-parameterisation: axes, masked normalisation and the fold maths.

Nothing here imports transformers; family adapters in ``compress`` describe a model as axes and
this package does the rest.
"""

from reparam.axes import Axis, GateSite, TensorDim
from reparam.fold import FoldResult, fold_state_dict, kept_indices
from reparam.gating import install_gates
from reparam.masked_norm import MaskedLayerNorm

__all__ = [
    "Axis",
    "FoldResult",
    "GateSite",
    "MaskedLayerNorm",
    "TensorDim",
    "fold_state_dict",
    "install_gates",
    "kept_indices",
]
