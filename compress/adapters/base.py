"""What a family adapter provides: the axes of a model and the student classes to fold into."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from compress.errors import UnsupportedModelError
from compress.families import FAMILIES, Modality
from reparam import Axis

_EXAMPLE_TOKENS = 8


class FamilyAdapter(ABC):
    """Maps one family's modules to axes; the only place that knows module names."""

    family: str
    #: model class name -> heterogeneous student class name, for every supported head
    student_classes: Mapping[str, str]

    def __init__(self, model: PreTrainedModel) -> None:
        self.model = model

    @classmethod
    def supports(cls, model: nn.Module) -> bool:
        return type(model).__name__ in cls.student_classes and isinstance(model, PreTrainedModel)

    @property
    def modality(self) -> Modality:
        """What the family reads (``text`` or ``speech``), from the families table."""
        return FAMILIES[self.family].modality

    @property
    def axis_kinds(self) -> tuple[str, ...]:
        """The axis kinds this adapter can gate."""
        return FAMILIES[self.family].axis_kinds

    def example_inputs(self) -> dict[str, torch.Tensor]:
        """A one-example batch of the model's main input (token ids, pixels or audio), to trace its forward pass."""
        return example_inputs(self.model)

    @abstractmethod
    def axes(self, head_width: bool = False) -> list[Axis]:
        """Every axis of the model, gated or not, with parent axes before their children.

        ``head_width``: each layer gets a ``head_width`` axis (the dimensions of every head) in place
        of ``heads`` (whole heads); the two lie on the same rows, so a model has one or the other.
        """

    def refuse_head_width(self, head_width: bool) -> None:
        """For families whose adapter builds no ``head_width`` axis: a clear error when one is asked for."""
        if head_width:
            raise UnsupportedModelError(
                f"the {self.family} adapter has no head_width axis; gate whole heads (prune.axes: heads) instead"
            )

    @abstractmethod
    def is_encoder(self, name: str) -> bool:
        """Whether a parameter counts as an encoder parameter (the size target's unit)."""

    @abstractmethod
    def is_backbone(self, name: str) -> bool:
        """Whether a parameter belongs to the embeddings or the encoder (not the pooler or a head)."""

    @abstractmethod
    def attention_projections(self, layer: int) -> tuple[str, str, str]:
        """Module names of layer ``layer``'s query, key and value projections (same in the student)."""

    def residual_sums(self, layer: int) -> list[tuple[str, str]]:
        """Layer ``layer``'s (output projection, module reading the residual sum) names, for ``compress.reconstruct``.

        Empty where the family's layers have no such pair (the default): reconstruct refuses them.
        """
        return []

    @abstractmethod
    def kind_limits(self) -> dict[str, int]:
        """The teacher's size for each axis kind (per layer where the kind is per layer)."""

    @abstractmethod
    def student_config(
        self, sizes: Mapping[str, int], stock: bool, kept: Mapping[str, torch.Tensor]
    ) -> PretrainedConfig:
        """The config of the student whose axes keep ``sizes`` units (stock or heterogeneous).

        ``kept`` holds the kept unit indices per axis, for a student that must know which teacher
        units it kept (WavLM's per-head position bias), not only how many.
        """

    @abstractmethod
    def is_stock_shape(self, sizes: Mapping[str, int]) -> bool:
        """Whether a stock config of the family can express the student."""

    @abstractmethod
    def student_class(self, stock: bool) -> type[PreTrainedModel]:
        """The class the student is built with: the teacher's own class, or its heterogeneous twin."""

    def student_init_kwargs(self) -> dict:
        """Extra constructor arguments the student class needs to match the teacher's modules."""
        return {}


def example_inputs(model: PreTrainedModel) -> dict[str, torch.Tensor]:
    """A one-example batch of ``model``'s main input (token ids, pixels or audio)."""
    config, name = model.config, model.main_input_name
    device = next(model.parameters()).device
    if name == "input_ids":
        batch = torch.arange(1, _EXAMPLE_TOKENS + 1).remainder(config.vocab_size).unsqueeze(0)
    elif name == "pixel_values":
        size = config.image_size if isinstance(config.image_size, (tuple, list)) else (config.image_size,) * 2
        batch = torch.zeros(1, config.num_channels, *size)
    elif name == "input_values":
        batch = torch.zeros(1, 4000)
    else:
        raise UnsupportedModelError(
            f"cannot build an example input for {type(model).__name__} (main input {name!r}); "
            "models that take input_ids, pixel_values or input_values are supported"
        )
    return {name: batch.to(device)}
