"""Student classes for shapes a stock config cannot express, registered with the Auto classes.

``modeling_compressed_bert.py`` and ``modeling_compressed_hubert.py`` (HuBERT and wav2vec2) are
self-contained (torch + transformers only): export copies them beside the weights so
``trust_remote_code=True`` loads a student without this library. The data2vec-audio and WavLM files
import ``modeling_compressed_hubert`` (a relative import, which remote code resolves in the folder):
export copies it beside them (``remote_code_for`` lists both).
"""

from __future__ import annotations

from pathlib import Path

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForAudioClassification,
    AutoModelForCTC,
    AutoModelForMaskedLM,
    AutoModelForPreTraining,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
)
from transformers.dynamic_module_utils import get_relative_import_files

from compress.students import modeling_compressed_bert as bert
from compress.students import modeling_compressed_data2vec_audio as data2vec
from compress.students import modeling_compressed_hubert as speech
from compress.students import modeling_compressed_wavlm as wavlm

#: (config class, {Auto class name: model class}, the modeling file to copy on export)
STUDENT_FAMILIES = [
    (
        bert.CompressedBertConfig,
        {
            "AutoModel": bert.CompressedBertModel,
            "AutoModelForMaskedLM": bert.CompressedBertForMaskedLM,
            "AutoModelForSequenceClassification": bert.CompressedBertForSequenceClassification,
            "AutoModelForTokenClassification": bert.CompressedBertForTokenClassification,
            "AutoModelForQuestionAnswering": bert.CompressedBertForQuestionAnswering,
        },
        Path(bert.__file__),
    ),
    (
        bert.CompressedRobertaConfig,
        {
            "AutoModel": bert.CompressedRobertaModel,
            "AutoModelForMaskedLM": bert.CompressedRobertaForMaskedLM,
            "AutoModelForSequenceClassification": bert.CompressedRobertaForSequenceClassification,
            "AutoModelForTokenClassification": bert.CompressedRobertaForTokenClassification,
            "AutoModelForQuestionAnswering": bert.CompressedRobertaForQuestionAnswering,
        },
        Path(bert.__file__),
    ),
    (
        bert.CompressedDistilBertConfig,
        {
            "AutoModel": bert.CompressedDistilBertModel,
            "AutoModelForMaskedLM": bert.CompressedDistilBertForMaskedLM,
            "AutoModelForSequenceClassification": bert.CompressedDistilBertForSequenceClassification,
            "AutoModelForTokenClassification": bert.CompressedDistilBertForTokenClassification,
            "AutoModelForQuestionAnswering": bert.CompressedDistilBertForQuestionAnswering,
        },
        Path(bert.__file__),
    ),
    (
        bert.CompressedMPNetConfig,
        {
            "AutoModel": bert.CompressedMPNetModel,
            "AutoModelForMaskedLM": bert.CompressedMPNetForMaskedLM,
            "AutoModelForSequenceClassification": bert.CompressedMPNetForSequenceClassification,
            "AutoModelForTokenClassification": bert.CompressedMPNetForTokenClassification,
            "AutoModelForQuestionAnswering": bert.CompressedMPNetForQuestionAnswering,
        },
        Path(bert.__file__),
    ),
    (
        bert.CompressedElectraConfig,
        {
            "AutoModel": bert.CompressedElectraModel,
            "AutoModelForPreTraining": bert.CompressedElectraForPreTraining,
            "AutoModelForMaskedLM": bert.CompressedElectraForMaskedLM,
            "AutoModelForSequenceClassification": bert.CompressedElectraForSequenceClassification,
            "AutoModelForTokenClassification": bert.CompressedElectraForTokenClassification,
            "AutoModelForQuestionAnswering": bert.CompressedElectraForQuestionAnswering,
        },
        Path(bert.__file__),
    ),
    (
        speech.CompressedHubertConfig,
        {
            "AutoModel": speech.CompressedHubertModel,
            "AutoModelForCTC": speech.CompressedHubertForCTC,
            "AutoModelForAudioClassification": speech.CompressedHubertForSequenceClassification,
        },
        Path(speech.__file__),
    ),
    (
        speech.CompressedWav2Vec2Config,
        {
            "AutoModel": speech.CompressedWav2Vec2Model,
            "AutoModelForCTC": speech.CompressedWav2Vec2ForCTC,
            "AutoModelForAudioClassification": speech.CompressedWav2Vec2ForSequenceClassification,
        },
        Path(speech.__file__),
    ),
    (
        data2vec.CompressedData2VecAudioConfig,
        {
            "AutoModel": data2vec.CompressedData2VecAudioModel,
            "AutoModelForCTC": data2vec.CompressedData2VecAudioForCTC,
            "AutoModelForAudioClassification": data2vec.CompressedData2VecAudioForSequenceClassification,
        },
        Path(data2vec.__file__),
    ),
    (
        wavlm.CompressedWavLMConfig,
        {
            "AutoModel": wavlm.CompressedWavLMModel,
            "AutoModelForCTC": wavlm.CompressedWavLMForCTC,
            "AutoModelForAudioClassification": wavlm.CompressedWavLMForSequenceClassification,
        },
        Path(wavlm.__file__),
    ),
]

_AUTO = {
    "AutoModel": AutoModel,
    "AutoModelForAudioClassification": AutoModelForAudioClassification,
    "AutoModelForCTC": AutoModelForCTC,
    "AutoModelForMaskedLM": AutoModelForMaskedLM,
    "AutoModelForPreTraining": AutoModelForPreTraining,
    "AutoModelForQuestionAnswering": AutoModelForQuestionAnswering,
    "AutoModelForSequenceClassification": AutoModelForSequenceClassification,
    "AutoModelForTokenClassification": AutoModelForTokenClassification,
}


def register_students() -> None:
    """Register every heterogeneous config and model class with transformers' Auto classes.

    The classes are also registered *for* their Auto class, so ``save_pretrained`` (and
    ``push_to_hub``) of a loaded student writes the modeling file and ``auto_map`` beside the weights:
    the re-saved folder loads without this library, as the exported one does.
    """
    for config_cls, models, _ in STUDENT_FAMILIES:
        AutoConfig.register(config_cls.model_type, config_cls, exist_ok=True)
        config_cls.register_for_auto_class()
        for auto_name, model_cls in models.items():
            _AUTO[auto_name].register(config_cls, model_cls, exist_ok=True)
            model_cls.register_for_auto_class(auto_name)


def remote_code_for(config_cls: type) -> tuple[dict[str, str], list[Path]] | None:
    """The ``auto_map`` and modeling files that let stock transformers load a heterogeneous student.

    The files are the family's modeling file and those it imports relatively (``from .modeling_... import``).
    """
    for known, models, source in STUDENT_FAMILIES:
        if config_cls is known:
            module = source.stem
            auto_map = {"AutoConfig": f"{module}.{known.__name__}"}
            auto_map.update({auto: f"{module}.{cls.__name__}" for auto, cls in models.items()})
            return auto_map, [source, *(Path(p) for p in get_relative_import_files(source))]
    return None


# Importing this package registers the students (compress.autoregister imports it once transformers is in use).
register_students()
