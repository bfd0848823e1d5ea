"""data2vec-audio encoders whose transformer layers may each have a different size.

data2vec-audio's encoder layers are wav2vec2's post-LN layers under the same module names; what differs is its
feature extractor (a LayerNorm after every conv) and its positional embedding (a stack of convolutions), which are
transformers' own here. The per-layer encoder, its layers and the heads come from ``modeling_compressed_hubert``,
the one file this imports; export copies both, so ``trust_remote_code=True`` loads a student with only torch and
transformers.
"""

from transformers import (
    Data2VecAudioConfig,
    Data2VecAudioForCTC,
    Data2VecAudioForSequenceClassification,
    Data2VecAudioModel,
)
from transformers.models.data2vec import modeling_data2vec_audio as data2vec

from .modeling_compressed_hubert import (
    _RECORD_OUTPUTS,
    _init_base,
    _init_classification_head,
    _init_ctc_head,
    _per_layer_config,
)


class CompressedData2VecAudioConfig(
    _per_layer_config(Data2VecAudioConfig, "compressed_data2vec_audio", "CompressedData2VecAudioConfig")
):
    """The per-layer data2vec-audio config, defined here so the saved ``auto_map`` names this file."""


#: the stock feature encoder, feature projection and positional convolutions
_PARTS = (
    data2vec.Data2VecAudioFeatureEncoder,
    data2vec.Data2VecAudioFeatureProjection,
    data2vec.Data2VecAudioPositionalConvEmbedding,
)


class CompressedData2VecAudioModel(Data2VecAudioModel):
    config_class = CompressedData2VecAudioConfig
    _can_record_outputs = _RECORD_OUTPUTS

    def __init__(self, config: CompressedData2VecAudioConfig) -> None:
        data2vec.Data2VecAudioPreTrainedModel.__init__(self, config)
        _init_base(self, config, _PARTS)
        self.adapter = None
        self.post_init()


class CompressedData2VecAudioForCTC(Data2VecAudioForCTC):
    config_class = CompressedData2VecAudioConfig
    _can_record_outputs = _RECORD_OUTPUTS

    def __init__(self, config: CompressedData2VecAudioConfig) -> None:
        data2vec.Data2VecAudioPreTrainedModel.__init__(self, config)
        _init_ctc_head(self, config, CompressedData2VecAudioModel, None)
        self.post_init()


class CompressedData2VecAudioForSequenceClassification(Data2VecAudioForSequenceClassification):
    config_class = CompressedData2VecAudioConfig
    _can_record_outputs = _RECORD_OUTPUTS

    def __init__(self, config: CompressedData2VecAudioConfig) -> None:
        data2vec.Data2VecAudioPreTrainedModel.__init__(self, config)
        _init_classification_head(self, config, CompressedData2VecAudioModel)
        self.post_init()
