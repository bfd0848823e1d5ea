"""``compress prune-vocab``: a student keeping only a corpus's tokens computes what the original did on that corpus.

Kept rows are exactly the used ids and the special ids; corpus text tokenises to the same tokens under new
ids and gives the original's hidden states (and MLM logits on kept tokens, tied or untied decoder); words that
need a removed piece are split again over the kept pieces, or become one [UNK]; the folder is a complete
student (hashes, record, sentence-transformers modules) that loads without the library; bad input is refused.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from pathlib import Path

import pytest
import torch
import transformers
from sentence_transformers import SentenceTransformer
from tokenizers import Tokenizer, models
from transformers import AutoTokenizer, BertTokenizer, TokenizersBackend

import compress
from compress.cli import main
from compress.errors import DataError, OutputDirError, RunFolderError
from compress.teachers import default_teacher_path, small_random_bert
from compress.vocabulary import VocabularyError, _pruned_tokenizer, prune_vocabulary, vocabulary_from_texts
from conftest import load_many_elsewhere, randomise_gates, tiny_bert_config

TOL = 1e-5
CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Structured pruning removes whole heads, neurons and layers.",
    "A short one.",
    "def fold(model): return model  # code and prose mixed together, with punctuation!",
    "Vocabulary pruning keeps the tokens a corpus uses and drops the other embedding rows.",
]


def write_corpus(path: Path, documents: list[str]) -> Path:
    """A .txt corpus as ``compress run --data`` reads it: one document per blank-line separated paragraph."""
    path.write_text("\n\n".join(documents) + "\n", encoding="utf-8")
    return path


def used_and_special(tokenizer, documents: list[str]) -> list[int]:
    """The ids the tokenizer gives the documents, with its special ids: what pruning must keep, sorted."""
    used = {i for ids in tokenizer(documents, add_special_tokens=False)["input_ids"] for i in ids}
    return sorted(used | set(tokenizer.all_special_ids))


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with the sha256 of its bytes, to show a folder was left as it was."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def read_record(folder: Path) -> dict:
    return json.loads((folder / "compression.json").read_text(encoding="utf-8"))


#: uniform sizes of the tiny BERT (4 heads x 8 = hidden 32): a stock student, loaded without remote code
STOCK = {"hidden": 32, "heads": 4, "ffn": 50}


def tiny_student(
    folder: Path, tokenizer, cls: type = transformers.BertModel, sizes: dict | None = None, **config
) -> Path:
    """A small random BERT over ``tokenizer``'s vocabulary, folded and saved: random gates, or ``sizes`` (stock)."""
    torch.manual_seed(0)
    teacher = cls(tiny_bert_config(vocab_size=len(tokenizer), **config)).eval()
    job = compress.attach(teacher, "bert-l0")
    job.prune_to(sizes) if sizes else randomise_gates(job, 1)
    student, record = compress.fold(job)
    return compress.save_student(student, folder, processor=tokenizer, record=record)


@pytest.fixture(scope="module")
def minilm_student(tmp_path_factory, minilm):
    """The real MiniLM folded with random gates (heterogeneous), saved as a sentence-transformers student."""
    teacher, tokenizer = minilm
    job = compress.attach(teacher, "bert-l0")
    randomise_gates(job, 1)
    student, record = compress.fold(job)
    folder = tmp_path_factory.mktemp("minilm") / "student"
    compress.save_student(student, folder, processor=tokenizer, record=record, sentence_from=default_teacher_path())
    return folder, student.eval(), tokenizer


@pytest.fixture(scope="module")
def pruned_minilm(minilm_student, tmp_path_factory):
    folder = tmp_path_factory.mktemp("pruned")
    corpus = write_corpus(folder / "corpus.txt", CORPUS)
    before = snapshot(minilm_student[0])
    out = prune_vocabulary(minilm_student[0], corpus, folder / "student", progress=False)
    assert snapshot(minilm_student[0]) == before, "the input student is never changed"
    return out, corpus


def test_minilm_keeps_used_and_special_rows_and_computes_the_same_hidden_states(minilm_student, pruned_minilm):
    source, student, tokenizer = minilm_student
    out, corpus = pruned_minilm
    kept = used_and_special(tokenizer, CORPUS)
    pruned = compress.load_student(out).eval()  # checks the rewritten file hashes
    assert type(pruned) is type(student)
    assert pruned.get_input_embeddings().weight.shape == (len(kept), student.config.hidden_size)
    assert pruned.config.vocab_size == len(kept) < 200
    assert torch.equal(pruned.get_input_embeddings().weight, student.get_input_embeddings().weight[kept])

    new_tokenizer = AutoTokenizer.from_pretrained(out)
    assert len(new_tokenizer) == len(kept) and new_tokenizer.convert_ids_to_tokens(list(range(len(kept)))) == (
        tokenizer.convert_ids_to_tokens(kept)
    )
    old = tokenizer(CORPUS, padding=True, return_tensors="pt")
    new = new_tokenizer(CORPUS, padding=True, return_tensors="pt")
    new_id = {o: n for n, o in enumerate(kept)}
    assert new["input_ids"].tolist() == [[new_id[i] for i in row] for row in old["input_ids"].tolist()]
    with torch.no_grad():
        expected = student(**old).last_hidden_state
        got = pruned(**new).last_hidden_state
    assert (got - expected).abs().max().item() <= TOL

    record, original = read_record(out), read_record(source)
    assert record["vocabulary"] == {
        "original_size": 30522,
        "kept_size": len(kept),
        "tokens_removed": 30522 - len(kept),
        "min_count": 1,
        "corpus": str(corpus),
    }
    removed = (30522 - len(kept)) * student.config.hidden_size
    assert record["student_parameters"] == original["student_parameters"] - removed == pruned.num_parameters()
    assert record["structure"]["parameters"] == original["structure"]["parameters"] - removed
    assert record["recipe"] == original["recipe"] and record["format"] == "heterogeneous"
    # The sentence-transformers pipeline survives as it was.
    for name in ("modules.json", "1_Pooling/config.json", "2_Normalize", "sentence_bert_config.json"):
        assert (out / name).exists()
    assert (out / "1_Pooling/config.json").read_text() == (source / "1_Pooling/config.json").read_text()
    original, pruned_st = (SentenceTransformer(str(f), device="cpu", trust_remote_code=True) for f in (source, out))
    embeddings = [model.encode(CORPUS, convert_to_tensor=True) for model in (original, pruned_st)]
    assert (embeddings[1] - embeddings[0]).abs().max().item() <= TOL
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")], "no staging folder is left behind"


def test_removed_tokens_are_split_again_over_kept_pieces_or_become_one_unk(minilm, tmp_path):
    """The module docstring's example, exactly: only "tokenize" and "tokens" in the corpus."""
    tokenizer = minilm[1]
    student = tiny_student(tmp_path / "student", tokenizer)
    corpus = write_corpus(tmp_path / "corpus.txt", ["tokenize tokens"])
    out = prune_vocabulary(student, corpus, tmp_path / "pruned", progress=False)
    new = AutoTokenizer.from_pretrained(out)
    kept = sorted({*tokenizer.all_special_ids, *tokenizer.convert_tokens_to_ids(["token", "##ize", "##s"])})
    assert new.convert_ids_to_tokens(list(range(len(new)))) == tokenizer.convert_ids_to_tokens(kept)
    assert len(kept) == 8 and compress.load_student(out).get_input_embeddings().num_embeddings == 8
    assert [tokenizer.tokenize(w) for w in ("tokenize", "tokens", "tokenizes", "tokenizer", "zebra")] == [
        ["token", "##ize"], ["token", "##s"], ["token", "##izes"], ["token", "##izer"], ["zebra"]
    ]
    assert new.tokenize("tokenize tokens") == ["token", "##ize", "token", "##s"]
    assert new.tokenize("tokenizes") == ["token", "##ize", "##s"]  # split again, not token [UNK]
    assert new.tokenize("tokenizer") == ["[UNK]"]  # no kept pieces spell it: the whole word, though token is kept
    assert new.tokenize("zebra [MASK]") == ["[UNK]", "[MASK]"]
    assert new("tokenizes")["input_ids"] == new.convert_tokens_to_ids(["[CLS]", "token", "##ize", "##s", "[SEP]"])


def test_a_word_the_original_cannot_spell_stays_unknown(tmp_path):
    """An [UNK] word keeps the pieces WordPiece matched before giving up, or a smaller vocabulary could spell it."""
    # 100 tokens (fillers after the ten that matter): no other dimension of the tiny model has that size.
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "ab", "a", "##bc", "x", "y", *(f"f{i}" for i in range(90))]
    vocab = {token: i for i, token in enumerate(tokens)}
    tokenizer = BertTokenizer(vocab=vocab)
    corpus = ["abc a xbc"]
    assert tokenizer.tokenize(corpus[0]) == ["[UNK]", "a", "x", "##bc"]  # abc: ab, then no ##c
    kept = vocabulary_from_texts(tokenizer, corpus)
    assert kept == [0, 1, 2, 3, 4, 5, 6, 7, 8]  # ab (5) counted for abc; y (9) unused
    assert _pruned_tokenizer(tokenizer, [i for i in kept if i != 5]).tokenize("abc") == ["a", "##bc"]  # why ab is kept
    student = tiny_student(tmp_path / "student", tokenizer)
    out = prune_vocabulary(student, write_corpus(tmp_path / "corpus.txt", corpus), tmp_path / "pruned", progress=False)
    new = AutoTokenizer.from_pretrained(out)
    assert new.tokenize("abc a xbc y") == ["[UNK]", "a", "x", "##bc", "[UNK]"]
    with pytest.raises(VocabularyError, match="min_count is 0; pass a whole number >= 1"):
        vocabulary_from_texts(tokenizer, corpus, min_count=0)
    with pytest.raises(DataError, match="no text"):
        vocabulary_from_texts(tokenizer, [])


@pytest.mark.parametrize(
    "tied, sizes, cls_name", [(True, None, "CompressedBertForMaskedLM"), (False, STOCK, "BertForMaskedLM")]
)
def test_mlm_student_keeps_its_logits_on_kept_tokens(minilm, tied, sizes, cls_name, tmp_path):
    tokenizer = minilm[1]
    student_dir = tiny_student(tmp_path / "mlm", tokenizer, transformers.BertForMaskedLM, sizes, tie_word_embeddings=tied)
    student = compress.load_student(student_dir).eval()
    assert type(student).__name__ == cls_name
    corpus = write_corpus(tmp_path / "corpus.txt", CORPUS)
    out = compress.prune_vocabulary(student_dir, corpus, tmp_path / "pruned", progress=False)
    kept = used_and_special(tokenizer, CORPUS)
    pruned = compress.load_student(out).eval()
    decoder, embeddings = pruned.get_output_embeddings(), pruned.get_input_embeddings()
    assert decoder.weight.shape[0] == decoder.bias.shape[0] == pruned.cls.predictions.bias.shape[0] == len(kept)
    assert (decoder.weight.data_ptr() == embeddings.weight.data_ptr()) is tied
    assert torch.equal(decoder.weight, student.get_output_embeddings().weight[kept])
    assert torch.equal(decoder.bias, student.get_output_embeddings().bias[kept])
    old = tokenizer(CORPUS, padding=True, return_tensors="pt")
    new = AutoTokenizer.from_pretrained(out)(CORPUS, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = student(**old).logits[..., kept]
        got = pruned(**new).logits
    assert got.shape == expected.shape and (got - expected).abs().max().item() <= TOL
    assert read_record(out)["format"] == ("heterogeneous" if sizes is None else "stock")


def test_cli_prunes_prints_a_summary_and_follows_the_output_policy(minilm, tmp_path, capsys):
    tokenizer = minilm[1]
    student = tiny_student(tmp_path / "student", tokenizer)
    corpus = write_corpus(tmp_path / "corpus.txt", CORPUS)
    out = tmp_path / "pruned"
    args = ["prune-vocab", str(student), "--data", str(corpus), "--out", str(out), "--no-progress"]
    assert main(args) == 0
    kept = len(used_and_special(tokenizer, CORPUS))
    line = capsys.readouterr().out.strip()
    match = re.fullmatch(
        rf"vocabulary pruned: 30,522 -> {kept} embedding rows, weights (\d+\.\d) MB -> (\d+\.\d) MB; "
        rf"student written to {re.escape(str(out))}",
        line,
    )
    assert match, line
    assert float(match[1]) == round((student / "model.safetensors").stat().st_size / 1e6, 1)
    assert float(match[2]) == round((out / "model.safetensors").stat().st_size / 1e6, 1) < float(match[1])

    assert main(args) == 2
    assert "holds an earlier student; pass --overwrite" in capsys.readouterr().err
    assert main([*args, "--overwrite", "--min-count", "2"]) == 0
    capsys.readouterr()
    counts = Counter(i for ids in tokenizer(CORPUS, add_special_tokens=False)["input_ids"] for i in ids)
    twice = {i for i, n in counts.items() if n >= 2} | set(tokenizer.all_special_ids)
    assert read_record(out)["vocabulary"]["min_count"] == 2
    assert read_record(out)["vocabulary"]["kept_size"] == len(twice) < kept
    assert compress.load_student(out).get_input_embeddings().num_embeddings == len(twice)

    (tmp_path / "empty").mkdir()
    blank = write_corpus(tmp_path / "blank.txt", ["", "  "])
    refusals = [  # (student, corpus, out, extra arguments): the message on stderr
        ((tmp_path / "missing", corpus, tmp_path / "a"), "is not a folder"),
        ((tmp_path / "empty", corpus, tmp_path / "b"), "has no compression.json"),
        ((student, corpus, student), "is, lies in or contains the student being pruned"),
        ((student, blank, tmp_path / "c"), "has no text"),
        ((student, corpus, tmp_path / "d", "--min-count", "0"), "min_count is 0"),
    ]
    before = snapshot(student)
    for (folder, data, target, *extra), message in refusals:
        argv = ["prune-vocab", str(folder), "--data", str(data), "--out", str(target), *extra, "--no-progress"]
        assert main(argv) == 2, argv
        assert message in capsys.readouterr().err, message
    assert snapshot(student) == before
    assert not any((tmp_path / name).exists() for name in "abcd")


def test_bad_students_are_refused_before_any_work(minilm, tmp_path):
    corpus = write_corpus(tmp_path / "corpus.txt", CORPUS)
    with pytest.raises(RunFolderError, match="is not a folder"):
        prune_vocabulary(tmp_path / "missing", corpus, tmp_path / "out", progress=False)
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "config.json").write_text("{}")
    with pytest.raises(RunFolderError, match="is not a student of this library: it has no compression.json"):
        prune_vocabulary(tmp_path / "plain", corpus, tmp_path / "out", progress=False)
    bare = compress.save_student(small_random_bert(120), tmp_path / "bare")  # saved without a tokenizer
    with pytest.raises(VocabularyError, match="holds no tokenizer, so there is no vocabulary to prune"):
        prune_vocabulary(bare, corpus, tmp_path / "out", progress=False)
    student = tiny_student(tmp_path / "student", minilm[1])
    for out in (student, student / "inside", tmp_path):
        with pytest.raises(OutputDirError, match="is, lies in or contains the student being pruned"):
            prune_vocabulary(student, corpus, out, progress=False)
    with pytest.raises(OutputDirError, match="it is the run's input"):
        prune_vocabulary(student, tmp_path / "corpus.txt", tmp_path / "corpus.txt", progress=False)
    assert not (tmp_path / "out").exists() and not (student / "inside").exists()


@pytest.mark.parametrize(
    "model, kind",
    [
        (models.BPE({"<unk>": 0, "a": 1, "b": 2, "ab": 3}, [("a", "b")], unk_token="<unk>"), "BPE"),
        (models.Unigram([("<unk>", 0.0), ("a", -1.0), ("b", -1.0), ("ab", -1.5)], unk_id=0), "Unigram"),
    ],
)
def test_bpe_and_unigram_tokenizers_are_refused_by_name(model, kind, tmp_path):
    tokenizer = TokenizersBackend(tokenizer_object=Tokenizer(model), unk_token="<unk>")
    student = compress.save_student(small_random_bert(4), tmp_path / "student", processor=tokenizer)
    corpus = write_corpus(tmp_path / "corpus.txt", ["ab ba"])
    message = f"is a {kind} tokenizer, and only WordPiece tokenizers"
    with pytest.raises(VocabularyError, match=message):
        prune_vocabulary(student, corpus, tmp_path / "out", progress=False)
    with pytest.raises(VocabularyError, match=message):
        vocabulary_from_texts(tokenizer, ["ab"])
    assert not (tmp_path / "out").exists()


def test_pruned_students_load_without_the_library(minilm_student, pruned_minilm, minilm, tmp_path):
    source, student, tokenizer = minilm_student
    out = pruned_minilm[0]
    mlm_dir = tiny_student(tmp_path / "mlm", tokenizer, transformers.BertForMaskedLM, STOCK, tie_word_embeddings=False)
    mlm_out = prune_vocabulary(mlm_dir, pruned_minilm[1], tmp_path / "mlm-pruned", progress=False)
    mlm = compress.load_student(mlm_dir).eval()
    new = AutoTokenizer.from_pretrained(out)(CORPUS, padding=True, return_tensors="pt")
    old = tokenizer(CORPUS, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = [student(**old).last_hidden_state, mlm(**old).logits[..., used_and_special(tokenizer, CORPUS)]]
    cases = [(out, "AutoModel", True), (mlm_out, "AutoModelForMaskedLM", False)]  # heterogeneous, stock
    loaded = load_many_elsewhere(cases, dict(new), tmp_path)
    assert [name for name, _ in loaded] == ["CompressedBertModel", "BertForMaskedLM"]
    for (_, got), want in zip(loaded, expected):
        assert (got - want).abs().max().item() <= TOL


# -- the recipe step: export.vocabulary: corpus -------------------------------------------------------
def test_a_run_prunes_the_vocabulary_to_its_corpus(tiny_teacher_dir, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(f"Pruning removes heads and neurons, step {i}, from the encoder." for i in range(40)))
    overrides = {"train.max_steps": 2, "finetune.max_steps": 1, "train.batch_size": 2, "train.seq_len": 16,
                 "export.vocabulary": "corpus"}
    out = compress.run("bert-l0", teacher=tiny_teacher_dir, data=corpus, out=tmp_path / "run", overrides=overrides,
                       progress=False)
    record = json.loads((out / "compression.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(tiny_teacher_dir)
    used = {i for text in corpus.read_text().split("\n\n") for i in tokenizer(text)["input_ids"]}
    expected = sorted(used | set(tokenizer.all_special_ids))
    assert record["vocabulary"]["kept_size"] == len(expected) and record["vocabulary"]["corpus"] == str(corpus)
    student = compress.load_student(out)
    assert student.get_input_embeddings().num_embeddings == len(expected)
    assert record["structure"]["parameters"] == sum(p.numel() for p in student.parameters())
    pruned = AutoTokenizer.from_pretrained(out)
    text = "Pruning removes heads and neurons, step 7, from the encoder."
    assert pruned.convert_ids_to_tokens(pruned(text)["input_ids"]) == tokenizer.convert_ids_to_tokens(tokenizer(text)["input_ids"])


def test_a_run_refuses_the_vocabulary_step_before_training_where_it_cannot_apply(tmp_path):
    config = transformers.RobertaConfig(vocab_size=12, pad_token_id=1, bos_token_id=0, eos_token_id=2, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                        intermediate_size=64, max_position_embeddings=40)
    teacher = transformers.RobertaModel(config)
    folder = tmp_path / "roberta"
    teacher.save_pretrained(folder)
    vocab = {t: i for i, t in enumerate(["<s>", "<pad>", "</s>", "<unk>", *"abcdefgh"])}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    transformers.PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", pad_token="<pad>").save_pretrained(folder)
    with pytest.raises(VocabularyError, match="is a BPE tokenizer"):
        compress.run("bert-l0", teacher=folder, out=tmp_path / "out", progress=False,
                     overrides={"export.vocabulary": "corpus", "train.max_steps": 1, "train.seq_len": 16})
    assert not (tmp_path / "out").exists()
