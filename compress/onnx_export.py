"""``compress export DIR --onnx``: a student folder as ONNX (``DIR/onnx/model.onnx``), checked against torch.

The student's encoder (``model.base_model``: a model with a head exports its encoder) is traced with
dynamic batch and sequence axes: text inputs ``input_ids``, ``attention_mask`` and ``token_type_ids``
(when the model takes them), speech input ``input_values`` (batch x samples); the output is
``last_hidden_state``. Before anything is kept, onnxruntime runs the graph on two input shapes other
than the traced one and must match the torch student to ``TOLERANCE``; otherwise an error names the
difference. ``quantize="int8"`` adds ``model_int8.onnx`` (onnxruntime's dynamic quantization: int8
weights, per output channel) and scores it with the library's fidelity metric (``compress.evaluate``)
against the fp32 student on held-out texts (speech: held-out clips of ``data``).

The folder is written like a student is (``compress.outputs``): staged beside ``DIR/onnx`` and moved into
place only when complete and checked, never over files this module did not write, and over an earlier
export only with ``overwrite``. ``onnx_export.json`` in it records what was written and measured.
"""

from __future__ import annotations

import importlib
import inspect
import json
import logging
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from transformers import AutoFeatureExtractor, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutput

from compress import audio
from compress.adapters import modality_of
from compress.data import BUILTIN, split_source
from compress.errors import CompressError, OutputDirError
from compress.evaluate import audio_fidelity, embedding_fidelity, held_out_sentences
from compress.measure import audio_batch, token_batch
from compress.outputs import StagedOutput, remove_stale_siblings
from compress.recipe import section_defaults
from compress.report import load_run, load_run_student
from compress.sentence import MEAN_POOLING, Pooling, read_pipeline
from compress.teachers import folder_tokenizer

ONNX_FOLDER = "onnx"
FP32_FILE = "model.onnx"
INT8_FILE = "model_int8.onnx"
#: written last into the ONNX folder: what was exported and measured; it marks the folder as ours
MARKER = "onnx_export.json"
OUTPUT = "last_hidden_state"
QUANTIZATIONS = ("int8",)
#: largest max abs difference from the torch student that the fp32 graph may show
TOLERANCE = 1e-4
#: 17 has LayerNormalization as one op
OPSET = 17
INSTALL = 'pip install "encoder-compress[onnx]"'
#: (batch, tokens) of the traced example, then of the two checks: each differs from the others in both
TEXT_SHAPES = ((2, 16), (1, 7), (3, 23))
#: (batch, seconds of 16 kHz audio) likewise, for speech students
SPEECH_SHAPES = ((2, 0.5), (1, 0.3), (3, 0.45))
#: held-out texts (or clips) the int8 model is scored on
FIDELITY_ITEMS = 64
#: what onnxruntime's quantizer logs every time; its suggested pre-processing fails on these graphs
_PREPROCESS_HINT = "Please consider to run pre-processing before quantization"


class MissingOnnxLibrary(CompressError, ImportError):
    """onnx or onnxruntime is needed for ``compress export --onnx`` and is not installed."""


class OnnxCheckError(CompressError, ValueError):
    """The exported graph does not compute what the torch student computes."""


def onnx_runtime() -> ModuleType:
    """The ``onnxruntime`` module once ``onnx`` (which the quantizer edits graphs with) imports too, else an error
    naming the extra that installs both."""
    try:
        importlib.import_module("onnx")
        import onnxruntime
    except ImportError as err:
        raise MissingOnnxLibrary(
            f"ONNX export needs onnx and onnxruntime, which are not installed ({err}): {INSTALL} "
            "(or pip install onnx onnxruntime)"
        ) from err
    return onnxruntime


class OnnxEncoder(torch.nn.Module):
    """An onnxruntime session of an exported encoder, called like the torch encoder it came from.

    ``model(**batch).last_hidden_state`` (or ``model(input_values)``) runs the graph on CPU, so
    ``compress.evaluate``'s fidelity and ``compress.measure``'s latency take it as they take a student.
    Inputs the graph does not take are ignored; a missing ``token_type_ids`` is all zeros, as in torch.
    """

    def __init__(self, path: str | Path, config: Any = None, threads: int | None = None) -> None:
        """``config``: the exported model's (the fidelity code reads its position limit from it);
        ``threads``: onnxruntime's intra-op threads (default: its own choice, one per physical core)."""
        super().__init__()
        runtime = onnx_runtime()
        self.path, self.config = Path(path), config
        options = runtime.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        self.session = runtime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.eval()

    @property
    def base_model(self) -> OnnxEncoder:
        """Itself: the fidelity code runs ``model.base_model`` to skip heads, and this graph has none."""
        return self

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def forward(self, input_values: torch.Tensor | None = None, **inputs: torch.Tensor) -> BaseModelOutput:
        if input_values is not None:
            inputs["input_values"] = input_values
        if "token_type_ids" in self.input_names and "token_type_ids" not in inputs and "input_ids" in inputs:
            inputs["token_type_ids"] = torch.zeros_like(inputs["input_ids"])
        missing = [name for name in self.input_names if name not in inputs]
        if missing:
            raise CompressError(f"{self.path} takes {', '.join(self.input_names)}; missing {', '.join(missing)}")
        feed = {name: inputs[name].detach().cpu().numpy() for name in self.input_names}
        return BaseModelOutput(last_hidden_state=torch.from_numpy(self.session.run([OUTPUT], feed)[0]))


class _Traced(torch.nn.Module):
    """The student's encoder with positional inputs (the order of ``input_names``) and one output."""

    def __init__(self, model: PreTrainedModel, input_names: list[str]) -> None:
        super().__init__()
        self.encoder, self.input_names = model.base_model, input_names

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.encoder(**dict(zip(self.input_names, inputs))).last_hidden_state


def input_names(model: PreTrainedModel) -> list[str]:
    """The graph's inputs: ``input_values`` for speech, else ids, mask and token types if the model takes them."""
    if modality_of(model) == "speech":
        return ["input_values"]
    takes = inspect.signature(model.base_model.forward).parameters
    return ["input_ids", "attention_mask", *(["token_type_ids"] if "token_type_ids" in takes else [])]


def example_inputs(model: PreTrainedModel, shape: tuple[int, float], seed: int = 0) -> dict[str, torch.Tensor]:
    """Inputs of ``shape`` (batch, tokens or seconds); text has padding in its last row, past the middle.

    The traced example has padding so the masked path is what the graph keeps, whatever shortcut a
    transformers version takes for a mask without any. Tokens are capped at the model's position embeddings.
    """
    batch, length = shape
    if modality_of(model) == "speech":
        return audio_batch(batch, length, seed)
    tokens = min(int(length), getattr(model.config, "max_position_embeddings", int(length)))
    inputs = token_batch(model.config.vocab_size, batch, tokens, seed)
    inputs["attention_mask"][-1, tokens // 2 + 1 :] = 0
    inputs["token_type_ids"] = torch.zeros_like(inputs["input_ids"])
    return {name: inputs[name] for name in input_names(model)}


def _shapes(model: PreTrainedModel) -> tuple[tuple[int, float], ...]:
    return SPEECH_SHAPES if modality_of(model) == "speech" else TEXT_SHAPES


def export_graph(model: PreTrainedModel, path: Path) -> list[str]:
    """Trace ``model``'s encoder (eval mode) to ONNX at ``path``, batch and length axes dynamic; return its inputs.

    The TorchScript exporter (``dynamo=False``) needs no onnxscript. Its warnings about values the trace
    fixes are silenced: ``check_graph`` compares the result with torch on other shapes instead.
    """
    names = input_names(model)
    example = example_inputs(model, _shapes(model)[0])
    length = "samples" if names == ["input_values"] else "sequence"
    axes = {name: {0: "batch", 1: length} for name in names}
    axes[OUTPUT] = {0: "batch", 1: "frames" if length == "samples" else "sequence"}
    traced = _Traced(model, names).eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message="Exporting aten::index operator")
        torch.onnx.export(
            traced, tuple(example[name] for name in names), str(path), dynamo=False, input_names=names,
            output_names=[OUTPUT], dynamic_axes=axes, opset_version=OPSET,
        )
    return names


def _label(shape: tuple[int, float], speech: bool) -> str:
    return f"{shape[0]}x{shape[1]}s" if speech else f"{shape[0]}x{shape[1]}"


def compare(model: PreTrainedModel, encoder: OnnxEncoder) -> dict[str, float]:
    """For each check shape (``batch x tokens``, or ``batch x seconds``): the graph's max abs difference from
    the torch student; an error when its output's shape differs from torch's."""
    speech = modality_of(model) == "speech"
    results = {}
    for seed, shape in enumerate(_shapes(model)[1:], start=1):
        inputs = example_inputs(model, shape, seed)
        with torch.no_grad():
            expected = model.base_model(**inputs).last_hidden_state
        got = encoder(**inputs).last_hidden_state
        if got.shape != expected.shape:
            raise OnnxCheckError(
                f"{encoder.path} gives {OUTPUT} of shape {tuple(got.shape)} for input {_label(shape, speech)}, "
                f"the torch student {tuple(expected.shape)}; the export is broken, please report it"
            )
        results[_label(shape, speech)] = (got - expected).abs().max().item()
    return results


def check_graph(model: PreTrainedModel, encoder: OnnxEncoder) -> dict[str, float]:
    """Max abs difference of the fp32 graph from the torch student per check shape; an error above ``TOLERANCE``."""
    differences = compare(model, encoder)
    worst = max(differences, key=differences.get)
    if not differences[worst] <= TOLERANCE:
        raise OnnxCheckError(
            f"{encoder.path} differs from the torch student by {differences[worst]:.3g} (max abs, input {worst}; "
            f"tolerance {TOLERANCE:g}): the graph does not compute what the torch model does; please report it "
            "with the student's config.json"
        )
    return differences


class _DropHint(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_PREPROCESS_HINT)


def quantize_int8(fp32: Path, int8: Path) -> None:
    """Dynamic int8 quantization of ``fp32`` into ``int8``: int8 weights per output channel, activations at run time.

    Per-channel scales keep clearly more of the fp32 similarity structure than one scale per tensor
    (see benchmarks/onnx_int8.py) at the same size.
    """
    onnx_runtime()
    from onnxruntime.quantization import QuantType, quantize_dynamic

    hint = _DropHint()
    logging.getLogger().addFilter(hint)
    try:
        quantize_dynamic(fp32, int8, weight_type=QuantType.QInt8, per_channel=True)
    finally:
        logging.getLogger().removeFilter(hint)


def _record_settings(record: dict) -> dict[str, Any]:
    """The run's data and train settings (recipe defaults for what its compression.json lacks)."""
    recipe = record.get("recipe", {})
    settings = {}
    for section in ("data", "train"):
        given = recipe.get(section) if isinstance(recipe.get(section), dict) else {}
        settings.update({key: given.get(key, default) for key, default in section_defaults(section).items()})
    return settings


def held_out_items(model: PreTrainedModel, processor: Any, record: dict, data: str | Path | None) -> list:
    """What the int8 model is scored on: held-out texts or clips, split as the run split its data.

    ``data`` (default for text: the run's ``data.text`` corpus) goes through the run's held-out split
    (``data.held_out``, ``train.seed``), so with the training corpus no scored item was trained on.
    """
    settings = _record_settings(record)
    fraction, seed = settings["held_out"], settings["seed"]
    if modality_of(model) == "speech":
        rate = processor.sampling_rate
        clips = audio.split_clips(audio.load_clips(data, rate, settings["column"]), fraction, seed)[1]
        return [clip.wave[: round(settings["max_seconds"] * rate)] for clip in clips[:FIDELITY_ITEMS]]
    held = split_source(data or settings["text"] or BUILTIN, fraction, seed, settings["column"])[1]
    return held_out_sentences(held, limit=FIDELITY_ITEMS)


def fidelity(
    reference: torch.nn.Module, model: torch.nn.Module, processor: Any, items: list, pooling: Pooling = MEAN_POOLING
) -> float:
    """``compress.evaluate``'s fidelity of ``model`` against ``reference`` on held-out texts (embedded with
    ``pooling``) or clips."""
    if modality_of(reference) == "speech":
        return audio_fidelity(reference, model, processor, items)
    return embedding_fidelity(reference, model, processor, items, pooling=pooling)


def folder_pooling(folder: str | Path) -> Pooling:
    """How the student folder's sentence-transformers pipeline pools (the teacher's way); mean pooling without one."""
    pipeline = read_pipeline(folder)
    return pipeline.pooling if pipeline is not None else MEAN_POOLING


def _processor(folder: Path, model: PreTrainedModel) -> Any:
    """The student folder's tokenizer or feature extractor; None when it has none (fidelity is then skipped)."""
    if modality_of(model) == "speech":
        try:
            return AutoFeatureExtractor.from_pretrained(folder)
        except (OSError, ValueError):
            return None
    return folder_tokenizer(folder, model.config)


def _diffs(differences: dict[str, float]) -> str:
    return ", ".join(f"{diff:.2g} at {label}" for label, diff in differences.items())


@dataclass
class OnnxExport:
    """What ``export_onnx`` wrote and measured; ``text()`` is what the command prints."""

    folder: str
    inputs: list[str]
    fp32_file: str
    fp32_bytes: int
    max_abs_diff: dict[str, float]
    tolerance: float = TOLERANCE
    opset: int = OPSET
    int8_file: str | None = None
    int8_bytes: int | None = None
    int8_max_abs_diff: dict[str, float] = field(default_factory=dict)
    #: Spearman of pairwise cosine similarities against the fp32 torch student: {"onnx fp32": .., "onnx int8": ..}
    fidelity: dict[str, float] = field(default_factory=dict)
    fidelity_items: int = 0
    #: why fidelity was not measured, when it was not
    fidelity_note: str | None = None

    def text(self) -> str:
        folder = Path(self.folder)
        lines = [
            f"wrote {folder / self.fp32_file} (fp32, {self.fp32_bytes / 1e6:.1f} MB, opset {self.opset}; inputs "
            f"{', '.join(self.inputs)} -> {OUTPUT}, batch and length dynamic)",
            f"check passed: onnxruntime matches the torch student, max abs diff {_diffs(self.max_abs_diff)} "
            f"(tolerance {self.tolerance:g})",
        ]
        if self.int8_file is not None:
            lines.append(
                f"wrote {folder / self.int8_file} (dynamic int8, {self.int8_bytes / 1e6:.1f} MB, "
                f"{self.int8_bytes / self.fp32_bytes:.0%} of fp32; max abs diff from torch "
                f"{_diffs(self.int8_max_abs_diff)})"
            )
            if self.fidelity:
                change = self.fidelity["onnx int8"] - self.fidelity["onnx fp32"]
                lines.append(
                    f"int8 fidelity vs the fp32 student (Spearman of pairwise cosine similarities, "
                    f"{self.fidelity_items} held-out items): {self.fidelity['onnx int8']:.4f} "
                    f"(fp32 ONNX {self.fidelity['onnx fp32']:.4f}, change {change:+.4f})"
                )
            else:
                lines.append(f"int8 fidelity not measured: {self.fidelity_note}")
        lines.append(f"wrote {folder / MARKER}")
        return "\n".join(lines)


def _check_folder(out: Path, overwrite: bool) -> None:
    """Refuse an ``out`` holding anything but an earlier export, or an earlier export without ``overwrite``."""
    if out.exists() and not out.is_dir():
        raise OutputDirError(f"{out} is a file, not a folder; move it away, the ONNX export is written there")
    if out.is_dir() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            raise OutputDirError(
                f"{out} holds files that compress export did not write (no {MARKER}); move them away to export "
                "there (--overwrite only replaces an earlier export)"
            )
        if not overwrite:
            raise OutputDirError(f"{out} holds an earlier ONNX export; pass --overwrite (overwrite=True) to replace it")


def export_onnx(
    student_dir: str | Path,
    quantize: str | None = None,
    overwrite: bool = False,
    data: str | Path | None = None,
) -> OnnxExport:
    """Write ``student_dir/onnx/model.onnx`` (with ``quantize="int8"`` also ``model_int8.onnx``), checked.

    See the module doc for what is exported and checked, and how the folder is protected.

    ``data``: texts or audio to score the int8 model on (``held_out_items``); speech needs it for a fidelity.
    """
    onnx_runtime()
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise CompressError(f"unknown quantization {quantize!r}; choose one of {', '.join(QUANTIZATIONS)}")
    folder = Path(student_dir)
    record, _ = load_run(folder)
    out = folder.resolve() / ONNX_FOLDER
    _check_folder(out, overwrite)
    model = load_run_student(folder)
    remove_stale_siblings(out)
    with StagedOutput(out) as staged:
        names = export_graph(model, staged.path / FP32_FILE)
        result = OnnxExport(
            folder=str(folder / ONNX_FOLDER), inputs=names, fp32_file=FP32_FILE,
            fp32_bytes=(staged.path / FP32_FILE).stat().st_size,
            max_abs_diff=check_graph(model, OnnxEncoder(staged.path / FP32_FILE, model.config)),
        )
        if quantize == "int8":
            _add_int8(result, model, staged.path, folder, record, data)
        written = {key: value for key, value in asdict(result).items() if key != "folder"}  # no local path
        (staged.path / MARKER).write_text(json.dumps(written, indent=2) + "\n", encoding="utf-8")
        staged.commit()
    return result


def _add_int8(result: OnnxExport, model: PreTrainedModel, where: Path, folder: Path, record: dict, data: Any) -> None:
    """Quantize the fp32 graph in ``where``, check its output shapes, score its fidelity into ``result``.

    The student (of ``folder``) and both graphs embed the held-out items as the run's fidelity did:
    the folder's tokenizer (or feature extractor) and its pipeline's pooling.
    """
    quantize_int8(where / FP32_FILE, where / INT8_FILE)
    int8 = OnnxEncoder(where / INT8_FILE, model.config)
    result.int8_file, result.int8_bytes = INT8_FILE, (where / INT8_FILE).stat().st_size
    result.int8_max_abs_diff = compare(model, int8)
    processor = _processor(folder, model)
    if processor is None:
        result.fidelity_note = "the student folder has no tokenizer or feature extractor to prepare inputs with"
        return
    if modality_of(model) == "speech" and data is None:
        result.fidelity_note = "a speech student needs audio to score it on: pass --data AUDIO (data=...)"
        return
    items = held_out_items(model, processor, record, data)
    graphs = {"onnx fp32": OnnxEncoder(where / FP32_FILE, model.config), "onnx int8": int8}
    pooling = folder_pooling(folder)
    result.fidelity = {name: fidelity(model, graph, processor, items, pooling) for name, graph in graphs.items()}
    result.fidelity_items = len(items)
