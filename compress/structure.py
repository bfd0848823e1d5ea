"""The kept structure of a compression job: sizes per axis and the parameter counts they imply."""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, fields


@dataclass(frozen=True)
class Structure:
    """Kept units per axis and the student's parameter counts, predicted without folding."""

    sizes: dict[str, int]
    parameters: int
    encoder_parameters: int
    teacher_parameters: int
    teacher_encoder_parameters: int
    #: student / teacher MACs per token (text) or per second of audio (speech), measured at export
    macs_ratio: float | None = None

    @property
    def encoder_sparsity(self) -> float:
        """Fraction of the teacher's encoder parameters removed."""
        return 1.0 - self.encoder_parameters / self.teacher_encoder_parameters

    def per_layer(self, kind: str) -> list[int]:
        """Kept units of a per-layer axis kind (``heads``, ``ffn``, ``attention``, ``mlp``), by layer."""
        found = {int(name.split(".")[1]): n for name, n in self.sizes.items() if name.endswith(f".{kind}")}
        return [found[i] for i in sorted(found)]

    @classmethod
    def from_dict(cls, data: dict) -> Structure:
        """Read back what ``to_dict`` wrote (e.g. the ``structure`` of a compression.json)."""
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data or f.default is MISSING})

    def to_dict(self) -> dict:
        data = {**asdict(self), "encoder_sparsity": round(self.encoder_sparsity, 6)}
        if self.macs_ratio is None:
            del data["macs_ratio"]
        return data

    def _conv_lines(self) -> list[str]:
        """Kept channels of each feature-extractor conv (speech models), or nothing."""
        conv = [n for name, n in self.sizes.items() if name.startswith("conv.")]
        return [f"conv channels per layer: {conv}"] if conv else []

    def _attention_line(self) -> str:
        """Kept heads per layer, or the kept head width where the job prunes width instead of whole heads."""
        width = self.per_layer("head_width")
        return f"head width per layer: {width}" if width else f"heads per layer: {self.per_layer('heads')}"

    def summary(self) -> str:
        """A short human-readable table of the kept structure."""
        lines = [
            f"hidden: {self.sizes.get('hidden', '-')}",
            self._attention_line(),
            f"ffn per layer: {self.per_layer('ffn')}",
            f"attention kept: {self.per_layer('attention')}  mlp kept: {self.per_layer('mlp')}",
            *self._conv_lines(),
            f"parameters: {self.teacher_parameters:,} -> {self.parameters:,}",
            f"encoder parameters: {self.teacher_encoder_parameters:,} -> {self.encoder_parameters:,} "
            f"({self.encoder_sparsity:.1%} removed)",
        ]
        return "\n".join(lines)
