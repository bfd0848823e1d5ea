"""Student classes for shapes a stock config cannot express, registered with the Auto classes.

``modeling_compressed_bert.py`` is self-contained (torch + transformers only): export copies it
beside the weights so ``trust_remote_code=True`` loads a student without this library.
"""

from __future__ import annotations

from pathlib import Path

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
)

from compress.students import modeling_compressed_bert as bert

#: (config class, {Auto class name: model class}, the modeling file to copy on export)
STUDENT_FAMILIES = [
    (
        bert.CompressedBertConfig,
        {
            "AutoModel": bert.CompressedBertModel,
            "AutoModelForMaskedLM": bert.CompressedBertForMaskedLM,
            "AutoModelForSequenceClassification": bert.CompressedBertForSequenceClassification,
            "AutoModelForTokenClassification": bert.CompressedBertForTokenClassification,
        },
        Path(bert.__file__),
    ),
]

_AUTO = {
    "AutoModel": AutoModel,
    "AutoModelForMaskedLM": AutoModelForMaskedLM,
    "AutoModelForSequenceClassification": AutoModelForSequenceClassification,
    "AutoModelForTokenClassification": AutoModelForTokenClassification,
}


def register_students() -> None:
    """Register every heterogeneous config and model class with transformers' Auto classes."""
    for config_cls, models, _ in STUDENT_FAMILIES:
        AutoConfig.register(config_cls.model_type, config_cls, exist_ok=True)
        for auto_name, model_cls in models.items():
            _AUTO[auto_name].register(config_cls, model_cls, exist_ok=True)


def remote_code_for(config_cls: type) -> tuple[dict[str, str], Path] | None:
    """The ``auto_map`` and modeling file that let stock transformers load a heterogeneous student."""
    for known, models, source in STUDENT_FAMILIES:
        if config_cls is known:
            module = source.stem
            auto_map = {"AutoConfig": f"{module}.{known.__name__}"}
            auto_map.update({auto: f"{module}.{cls.__name__}" for auto, cls in models.items()})
            return auto_map, source
    return None
