"""A freshly attached job is the teacher: in eval mode its outputs equal the teacher's, for every method.

Training starts from the teacher and a one-shot structure is chosen from the teacher's weights, so
attaching must change nothing until a method acts: every gate is exactly 1, every compactor the
identity. Checked on the real MiniLM (and an MLM head on its weights) and on a tiny random HuBERT
(bare and with a CTC head), for each bundled recipe and for the generic path.
"""

from __future__ import annotations

import pytest
import torch
import transformers

import compress
from compress.teachers import default_teacher_path
from conftest import own_copy
from speech_helpers import one_thread, speech_recipe, tiny_speech_config  # noqa: F401 (one_thread is a fixture)

TOL = 1e-5
SPEECH_RECIPES = [name for name in compress.bundled_recipes() if compress.load_recipe(name).family == "hubert"]
TEXT_RECIPES = [name for name in compress.bundled_recipes() if name not in SPEECH_RECIPES]


@pytest.fixture(scope="module")
def minilm_mlm() -> transformers.BertForMaskedLM:
    """MiniLM's encoder under a (randomly initialised) MLM head: a text teacher whose logits are checked too."""
    torch.manual_seed(0)
    return transformers.BertForMaskedLM.from_pretrained(default_teacher_path()).eval()


def _outputs(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """The last hidden state, and the logits when the model has a head."""
    with torch.no_grad():
        out = model(**batch, output_hidden_states=True)
    logits = getattr(out, "logits", None)
    return [out.hidden_states[-1]] + ([logits] if logits is not None else [])


def _assert_teacher_outputs(job: compress.CompressionJob, teacher: torch.nn.Module, batch: dict) -> None:
    expected = _outputs(teacher, batch)
    got = _outputs(job.model.eval(), batch)
    assert len(got) == len(expected)
    for mine, theirs in zip(got, expected):
        assert mine.shape == theirs.shape
        assert (mine - theirs).abs().max().item() <= TOL


def test_every_bundled_recipe_is_covered():
    assert SPEECH_RECIPES and set(TEXT_RECIPES) >= {"bert-l0", "bert-wid", "bert-magnitude", "bert-taylor"}


@pytest.mark.parametrize("head", [False, True], ids=["encoder", "mlm"])
@pytest.mark.parametrize("name", TEXT_RECIPES)
def test_text_recipe_attaches_as_the_teacher(name, head, minilm, minilm_mlm, sentences):
    teacher, tokenizer = own_copy(minilm)
    teacher = minilm_mlm if head else teacher
    batch = dict(tokenizer(sentences, padding=True, return_tensors="pt"))
    _assert_teacher_outputs(compress.attach(teacher, name), teacher, batch)


def test_generic_path_attaches_as_the_teacher(minilm, sentences):
    teacher, tokenizer = own_copy(minilm)
    batch = dict(tokenizer(sentences, padding=True, return_tensors="pt"))
    _assert_teacher_outputs(compress.attach_generic(teacher, "bert-magnitude"), teacher, batch)


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("cls_name", ["HubertModel", "HubertForCTC"])
@pytest.mark.parametrize("name", SPEECH_RECIPES)
def test_speech_recipe_attaches_as_the_teacher(name, cls_name):
    torch.manual_seed(0)
    teacher = getattr(transformers, cls_name)(tiny_speech_config()).eval()
    audio = torch.randn(3, 1800, generator=torch.Generator().manual_seed(0))
    recipe = speech_recipe("hubert") if name == "hubert-dphubert" else compress.load_recipe(name)
    _assert_teacher_outputs(compress.attach(teacher, recipe), teacher, {"input_values": audio})
