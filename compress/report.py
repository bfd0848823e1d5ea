"""``compress report DIR``: what a finished run kept, layer by layer, and what the student costs against its teacher.

Reads the run's ``compression.json`` (and ``training_log.json`` when present), loads the student from the
folder and the teacher it was compressed from, and gives per-layer kept units (teacher -> student),
parameter counts, MACs and CPU latency, plus two PNGs: the per-layer structure and the training curves
(sparsity, Lagrange multipliers, losses). The benchmarks build their tables from the same report.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel

from compress.adapters import adapter_for, modality_of
from compress.errors import CompressError, RunFolderError
from compress.export import RECORD_FILE, TRAINING_LOG_FILE, load_student
from compress.fingerprint import DEFAULT_TEACHER_ID, DEFAULT_TEACHER_TAIL, recorded_teacher_folder
from compress.measure import example_batch, macs_per_unit, timed_rounds
from compress.model_card import LAYER_KINDS, fidelity_line
from compress.outputs import SUMMARY_MARKER
from compress.teachers import default_teacher_path, load_teacher_model

#: tokens per sequence (text) and seconds of audio (speech) that MACs are counted on, unless told otherwise
DEFAULT_SEQ, DEFAULT_SECONDS = 128, 1.0
LAYER_AXIS = re.compile(r"layers\.(\d+)\.(\w+)$")
#: Trainer log keys that are bookkeeping, not curves worth plotting.
NOT_PLOTTED = {"epoch", "step", "grad_norm", "learning_rate", "total_flos"}


class MissingPlotLibrary(CompressError, ImportError):
    """matplotlib is needed for the report's PNGs and is not installed."""


@dataclass(frozen=True)
class Latency:
    """Median CPU forward latency of teacher and student on the same input, measured in one interleaved run."""

    teacher_ms: float
    student_ms: float
    batch: int
    shape: str
    threads: int
    rounds: int

    @property
    def ratio(self) -> float:
        """Teacher time over student time (above 1: the student is faster)."""
        return self.teacher_ms / self.student_ms


@dataclass
class RunReport:
    """Everything ``compress report`` prints about one run folder."""

    run_dir: Path
    record: dict
    teacher: Path
    teacher_sizes: dict[str, int]
    macs: tuple[float, float]
    macs_unit: str
    log: dict | None = None
    latency: Latency | None = None
    plots: list[Path] = field(default_factory=list)

    @property
    def student_sizes(self) -> dict[str, int]:
        return self.record["structure"]["sizes"]

    @property
    def macs_ratio(self) -> float:
        """Teacher MACs over student MACs."""
        return self.macs[0] / self.macs[1]

    @property
    def training_minutes(self) -> float | None:
        """Wall minutes of the optimiser steps of all stages (the Trainer's ``train_runtime``), when logged."""
        runtimes = [e["train_runtime"] for entries in (self.log or {}).values() for e in entries if "train_runtime" in e]
        return sum(runtimes) / 60 if runtimes else None

    def layers(self) -> dict[int, dict[str, tuple[int, int]]]:
        """``{layer: {kind: (teacher units, student units)}}`` for every per-layer axis."""
        rows: dict[int, dict[str, tuple[int, int]]] = {}
        for name, kept in self.student_sizes.items():
            match = LAYER_AXIS.match(name)
            if match:
                rows.setdefault(int(match[1]), {})[match[2]] = (self.teacher_sizes[name], kept)
        return dict(sorted(rows.items()))

    def global_axes(self) -> dict[str, tuple[int, int]]:
        """Axes that are not per layer (``hidden``, speech ``conv.{j}``): ``{name: (teacher, student)}``."""
        return {n: (self.teacher_sizes[n], k) for n, k in self.student_sizes.items() if not LAYER_AXIS.match(n)}

    def text(self) -> str:
        """The report as printed: per-layer table, parameters, MACs, latency and the plots written."""
        structure, recipe = self.record["structure"], self.record.get("recipe", {})
        lines = [
            f"run: {self.run_dir}  recipe: {recipe.get('name', '?')}  method: {recipe.get('prune', {}).get('method', '?')}",
            f"teacher: {self.teacher}",
            *(f"{name}: {t} -> {s}" for name, (t, s) in self.global_axes().items()),
            *_layer_table(self.layers()),
            f"parameters: {structure['teacher_parameters']:,} -> {structure['parameters']:,}",
            (
                f"encoder parameters: {structure['teacher_encoder_parameters']:,} -> {structure['encoder_parameters']:,} "
                f"(ratio {structure['encoder_parameters'] / structure['teacher_encoder_parameters']:.3f}, "
                f"{structure['encoder_sparsity']:.1%} removed)"
            ),
            (
                f"MACs {self.macs_unit}: {_si(self.macs[0])} -> {_si(self.macs[1])} "
                f"(teacher / student {self.macs_ratio:.2f})"
            ),
        ]
        fidelity = fidelity_line(self.record.get("metrics", {}))
        if fidelity:
            lines.append(fidelity)
        if self.training_minutes is not None:
            lines.append(f"training: {self.training_minutes:.2f} min of optimiser steps ({', '.join(self.log)})")
        if self.latency is not None:
            lat = self.latency
            lines.append(
                f"CPU latency (base model, batch {lat.batch} x {lat.shape}, {lat.threads} thread"
                f"{'s' if lat.threads > 1 else ''}, median of "
                f"{lat.rounds} interleaved rounds): teacher {lat.teacher_ms:.2f} ms, student {lat.student_ms:.2f} ms, "
                f"teacher / student {lat.ratio:.2f}"
            )
        lines += [f"wrote {path}" for path in self.plots]
        return "\n".join(lines)


def _si(value: float) -> str:
    """``value`` with three significant digits and a K / M / G suffix (MAC counts)."""
    for factor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= factor:
            return f"{value / factor:.3g}{suffix}"
    return f"{value:.3g}"


def _layer_table(layers: dict[int, dict[str, tuple[int, int]]]) -> list[str]:
    """One row per layer, one ``teacher -> student`` column per axis kind the run has."""
    kinds = [k for k in LAYER_KINDS if any(k in row for row in layers.values())]
    cells = [[str(i), *(f"{row[k][0]} -> {row[k][1]}" for k in kinds)] for i, row in layers.items()]
    header = ["layer", *kinds]
    widths = [max(len(r[c]) for r in [header, *cells]) for c in range(len(header))]
    return [" | ".join(cell.rjust(w) for cell, w in zip(row, widths)) for row in [header, *cells]]


#: the fix every damaged-record message ends with
DAMAGED = "the run folder is damaged: run `compress run` again, or restore the file from a copy"
#: the fix of a damaged training log (the student and its record are fine without it)
DAMAGED_LOG = "the run folder is damaged: restore the file from a copy, or delete it to report without training figures"
#: the structure's parameter counts: whole numbers, the teacher's encoder count at least 1 (the ratio's divisor)
COUNTS = {"parameters": 0, "encoder_parameters": 0, "teacher_parameters": 1, "teacher_encoder_parameters": 1}


def load_run(run_dir: str | Path) -> tuple[dict, dict | None]:
    """The run's ``compression.json`` and its ``training_log.json`` (None when the run has none), both checked.

    Every entry the report reads is checked for presence and type first (``check_record``,
    ``check_training_log``), so a damaged or hand-edited file is refused in one line naming the file
    and the entry, never a TypeError / KeyError from deep inside the report.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunFolderError(f"{run_dir} is not a folder; pass the output folder of `compress run` (its --out)")
    path = run_dir / RECORD_FILE
    if not path.is_file() and (run_dir / SUMMARY_MARKER).is_file():
        students = sorted(p.name for p in run_dir.iterdir() if (p / RECORD_FILE).is_file())
        raise RunFolderError(
            f"{run_dir} holds the students of a multi-size run ({', '.join(students)}); pass one of them, "
            f"e.g. {run_dir / students[0]}" if students else f"{run_dir} holds a multi-size run's summary but no student"
        )
    if not path.is_file():
        raise RunFolderError(
            f"{run_dir} is not a compression run: it has no {RECORD_FILE}. Pass the folder `compress run` wrote "
            "(its --out, or the out= of compress.run)"
        )
    record = check_record(_read_json(path, DAMAGED), path)
    log_path = run_dir / TRAINING_LOG_FILE
    if not log_path.is_file():
        return record, None
    return record, check_training_log(_read_json(log_path, DAMAGED_LOG), log_path)


def _read_json(path: Path, fix: str = DAMAGED) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise RunFolderError(f"{path} is not UTF-8 text ({err.reason} at byte {err.start}); {fix}") from err
    except OSError as err:
        raise RunFolderError(f"{path} cannot be read ({err.strerror or err}); check its permissions") from err
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise RunFolderError(f"{path} is not valid JSON ({err}); {fix}") from err


def _kind(value: Any) -> str:
    """What a JSON value is, for messages: ``a string``, ``a list``, ``an object``, ..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "a list" if isinstance(value, list) else "an object"


class _Checker:
    """Checks of one JSON file; each failure is a ``RunFolderError`` naming the file and the dotted entry."""

    def __init__(self, path: Path, fix: str = DAMAGED) -> None:
        self.path = path
        self.fix = fix

    def fail(self, entry: str, problem: str) -> None:
        raise RunFolderError(f"{self.path}: {entry!r} {problem}; {self.fix}")

    def top(self, data: Any) -> dict:
        if not isinstance(data, dict):
            raise RunFolderError(f"{self.path} holds {_kind(data)}, not a JSON object; {self.fix}")
        return data

    def required(self, data: dict, key: str, entry: str) -> Any:
        if key not in data:
            raise RunFolderError(f"{self.path} has no {entry!r} entry; {self.fix}")
        return data[key]

    def mapping(self, value: Any, entry: str) -> dict:
        if not isinstance(value, dict):
            self.fail(entry, f"is {_kind(value)}, not an object")
        return value

    def listing(self, value: Any, entry: str) -> list:
        if not isinstance(value, list):
            self.fail(entry, f"is {_kind(value)}, not a list")
        return value

    def whole(self, value: Any, entry: str, least: int = 0) -> int:
        integral = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
        if isinstance(value, bool) or not integral:
            self.fail(entry, f"is {_kind(value)}, not a whole number")
        if value < least:
            self.fail(entry, f"is {value}, not a whole number >= {least}")
        return int(value)

    def number(self, value: Any, entry: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(entry, f"is {_kind(value)}, not a number")
        return value

    def text(self, value: Any, entry: str) -> str:
        if not isinstance(value, str):
            self.fail(entry, f"is {_kind(value)}, not a string")
        return value


def check_record(record: Any, path: Path) -> dict:
    """``record`` (a ``compression.json`` read from ``path``) when it holds what the report reads, else an error."""
    check = _Checker(path)
    record = check.top(record)
    if "structure" not in record:
        raise RunFolderError(
            f"{path} has no 'structure' entry: it was not written by compress.run / save_student, or {DAMAGED}"
        )
    structure = check.mapping(record["structure"], "structure")
    sizes = check.mapping(check.required(structure, "sizes", "structure.sizes"), "structure.sizes")
    if not sizes:
        check.fail("structure.sizes", "is empty (no axis has a kept size)")
    for name, kept in sizes.items():
        check.whole(kept, f"structure.sizes.{name}")
    for key, least in COUNTS.items():
        check.whole(check.required(structure, key, f"structure.{key}"), f"structure.{key}", least)
    sparsity = "structure.encoder_sparsity"
    check.number(check.required(structure, "encoder_sparsity", sparsity), sparsity)
    for key in ("teacher", "teacher_path", "teacher_hash"):
        if record.get(key) is not None:
            check.text(record[key], key)
    if "recipe" in record:
        recipe = check.mapping(record["recipe"], "recipe")
        if "prune" in recipe:
            check.mapping(recipe["prune"], "recipe.prune")
    if "metrics" in record:
        for key, value in check.mapping(record["metrics"], "metrics").items():
            if key.startswith("fidelity"):
                check.number(value, f"metrics.{key}")
    if "files" in record:
        for name, digest in check.mapping(record["files"], "files").items():
            check.text(digest, f"files.{name}")
    return record


def check_training_log(log: Any, path: Path) -> dict:
    """``log`` (a ``training_log.json``: ``{stage: [Trainer log entries]}``) when the report can read it, else an error.

    Only what the report reads is checked: each stage a list of objects, ``step`` a whole number and
    ``train_runtime`` a number where present (other non-numeric values are left out of the plots).
    """
    check = _Checker(path, DAMAGED_LOG)
    for stage, entries in check.top(log).items():
        for number, entry in enumerate(check.listing(entries, stage)):
            where = f"{stage}[{number}]"
            entry = check.mapping(entry, where)
            if "step" in entry:
                check.whole(entry["step"], f"{where}.step")
            if "train_runtime" in entry:
                check.number(entry["train_runtime"], f"{where}.train_runtime")
    return log


def find_teacher(record: dict, teacher: str | Path | None = None) -> Path:
    """The teacher's folder: ``teacher`` when given, else the record's teacher folder, else the default MiniLM.

    The record names its folder in ``teacher_path`` (or, without a hub id, in ``teacher``); the bundled
    MiniLM is found by its hub id or folder tail, wherever its package is installed here.
    """
    if teacher is not None:
        path = Path(teacher)
        if not (path / "config.json").is_file():
            raise CompressError(f"--teacher {path} is not a Hugging Face model folder (no config.json); pass one")
        return path
    found = recorded_teacher_folder(record)
    if found is not None:
        return found
    named = record.get("teacher") or ""
    if named == DEFAULT_TEACHER_ID or Path(named).parts[-2:] == DEFAULT_TEACHER_TAIL:
        return default_teacher_path()
    where = f" (recorded at {record['teacher_path']})" if record.get("teacher_path") else ""
    raise CompressError(
        f"the run's teacher {named!r}{where} is not a model folder on this machine; pass --teacher PATH "
        "(teacher=... in Python) with the teacher the run was compressed from"
    )


@contextmanager
def on_cpu(*models: torch.nn.Module) -> Iterator[None]:
    """Run the block with ``models`` on the CPU (the measuring inputs are built there), then put them back."""
    devices = [next(model.parameters()).device for model in models]
    for model in models:
        model.cpu()
    try:
        yield
    finally:
        for model, device in zip(models, devices):
            model.to(device)


def base_macs(
    teacher: PreTrainedModel, student: PreTrainedModel, seq: int = DEFAULT_SEQ, seconds: float = DEFAULT_SECONDS
) -> tuple[tuple[float, float], str]:
    """MACs of the teacher's and the student's base models and what they are per (the unit's words).

    Per token of one ``seq``-token sequence for text, per second of 16 kHz audio for speech: what
    ``compress report`` prints and what a run's export records in ``compression.json``.
    """
    speech = modality_of(teacher) == "speech"
    unit = "per second of 16 kHz audio (base model)" if speech else f"per token (base model, sequence of {seq})"
    with on_cpu(teacher, student):
        macs = (macs_per_unit(teacher.base_model, seq, seconds), macs_per_unit(student.base_model, seq, seconds))
    return macs, unit


def teacher_axis_sizes(teacher: PreTrainedModel, student_sizes: dict[str, int]) -> dict[str, int]:
    """Units of every axis of ``teacher``, named like the record's sizes; an error if the run is not from it."""
    adapter = adapter_for(teacher)(teacher)
    head_width = any(name.endswith(".head_width") for name in student_sizes)
    sizes = {axis.name: axis.size for axis in adapter.axes(head_width=head_width)}
    larger = [n for n, kept in student_sizes.items() if n in sizes and kept > sizes[n]]
    if set(sizes) != set(student_sizes) or larger:
        raise CompressError(
            f"the teacher {getattr(teacher.config, 'name_or_path', '')!r} does not match the run: its axes "
            f"{sorted(sizes)[:4]}... differ from the record's {sorted(student_sizes)[:4]}..."
            + (f" or are smaller ({larger[:3]})" if larger else "")
            + "; pass --teacher PATH with the teacher the run was compressed from"
        )
    return sizes


def build_report(
    run_dir: str | Path,
    teacher: str | Path | None = None,
    latency: bool = True,
    plots: bool = True,
    plot_dir: str | Path | None = None,
    plot_prefix: str = "report",
    batch: int = 8,
    seq: int = DEFAULT_SEQ,
    seconds: float = DEFAULT_SECONDS,
    rounds: int = 10,
) -> RunReport:
    """Report on an exported run folder (see the module docstring); PNGs go to ``plot_dir`` (default: the run).

    MACs are per token of one ``seq``-token sequence for text, per second of 16 kHz audio for speech;
    latency runs ``batch`` such inputs (``seq`` tokens, ``seconds`` of audio) through each base model.
    """
    run_dir = Path(run_dir)
    record, log = load_run(run_dir)
    if plots:
        _figure_class()  # fail before the slow part when matplotlib is missing
    teacher_path = find_teacher(record, teacher)
    teacher_model = load_teacher_model(teacher_path)
    sizes = teacher_axis_sizes(teacher_model, record["structure"]["sizes"])
    student = load_run_student(run_dir)
    models = {"teacher": teacher_model.base_model.eval(), "student": student.base_model}
    speech = modality_of(teacher_model) == "speech"
    macs, unit = base_macs(teacher_model, student, seq, seconds)
    report = RunReport(run_dir, record, teacher_path, sizes, macs, unit, log)
    if latency:
        times = timed_rounds(models, example_batch(student, batch, seq, seconds), rounds)
        shape = f"{seconds:g} s audio" if speech else f"{seq} tokens"
        report.latency = Latency(times["teacher"] * 1e3, times["student"] * 1e3, batch, shape, torch.get_num_threads(), rounds)
    if plots:
        folder = Path(plot_dir) if plot_dir is not None else run_dir
        folder.mkdir(parents=True, exist_ok=True)
        report.plots.append(plot_structure(report, folder / f"{plot_prefix}_structure.png"))
        if log and _curves(log)[0]:
            report.plots.append(plot_training(log, folder / f"{plot_prefix}_training.png", title=_title(record)))
    return report


def load_run_student(run_dir: Path) -> PreTrainedModel:
    """The run's student in eval mode, or one line saying why it does not load."""
    try:
        return load_student(run_dir).eval()
    except CompressError:
        raise
    except (OSError, ValueError, KeyError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise RunFolderError(f"the student in {run_dir} does not load ({first}); {DAMAGED}") from err


def _figure_class() -> type:
    """matplotlib's Figure (rendered by Agg without touching pyplot's global backend), or a clear error."""
    try:
        from matplotlib.figure import Figure
    except ImportError as err:
        raise MissingPlotLibrary(
            "the report's plots need matplotlib, which is not installed: pip install 'encoder-compress[report]' "
            "(or pip install matplotlib), or skip the plots with --no-plots (plots=False)"
        ) from err
    return Figure


def _title(record: dict) -> str:
    recipe = record.get("recipe", {})
    return f"{recipe.get('name', 'run')} ({recipe.get('prune', {}).get('method', '?')})"


def plot_structure(report: RunReport, path: Path) -> Path:
    """Bars of teacher vs kept units per layer, one panel per axis kind (and conv channels for speech)."""
    layers = report.layers()
    kinds = [k for k in ("heads", "head_width", "ffn") if any(k in row for row in layers.values())]
    panels = [(k, {i: row[k] for i, row in layers.items()}) for k in kinds]
    conv = {int(n.split(".")[1]): v for n, v in report.global_axes().items() if n.startswith("conv.")}
    if conv:
        panels.append(("conv channels", conv))
    figure = _figure_class()(figsize=(4.2 * len(panels), 3.6), layout="constrained")
    for ax, (kind, values) in zip(figure.subplots(1, len(panels), squeeze=False)[0], panels):
        index = list(values)
        ax.bar(index, [values[i][0] for i in index], color="0.85", label="teacher")
        bars = ax.bar(index, [values[i][1] for i in index], width=0.55, color="tab:blue", label="student")
        ax.bar_label(bars, labels=[_kept_label(layers.get(i, {}), values[i][1], kind) for i in index], fontsize=8)
        ax.set_title(kind)
        ax.set_xlabel("conv layer" if kind == "conv channels" else "layer")
        ax.set_xticks(index)
    figure.axes[0].legend(loc="lower left", fontsize=8)
    structure = report.record["structure"]
    hidden = report.global_axes().get("hidden")
    figure.suptitle(
        f"{_title(report.record)}: encoder parameters {structure['encoder_parameters'] / structure['teacher_encoder_parameters']:.0%}"
        f" of the teacher" + (f", hidden {hidden[0]} -> {hidden[1]}" if hidden else "")
    )
    figure.savefig(path, dpi=110)
    return path


def _kept_label(row: dict[str, tuple[int, int]], kept: int, kind: str) -> str:
    """The bar's label: the kept count, or ``removed`` where the layer's whole sublayer is gone."""
    sublayer = "mlp" if kind == "ffn" else "attention"
    return "removed" if sublayer in row and row[sublayer][1] == 0 else str(kept)


def _panel(key: str) -> str:
    if "sparsity" in key:
        return "sparsity"
    if key.startswith("lambda"):
        return "Lagrange multipliers"
    return "losses"


Curves = dict[str, dict[str, dict[str, list[tuple[int, float]]]]]


def _curves(log: dict[str, list[dict]]) -> tuple[Curves, list[int]]:
    """``{panel: {key: {stage: [(step, value)]}}}`` and the steps where a new stage starts.

    Later stages' steps continue after the earlier ones, so stage 2 follows stage 1 on one axis.
    """
    curves: Curves = {}
    offset, starts = 0, []
    for stage, entries in log.items():
        last = offset
        for entry in entries:
            if "step" not in entry or any(k.startswith("train_") for k in entry):
                continue  # the Trainer's end-of-training summary repeats the last step's totals
            step = offset + int(entry["step"])
            last = max(last, step)
            for key, value in entry.items():
                if key not in NOT_PLOTTED and isinstance(value, (int, float)):
                    curves.setdefault(_panel(key), {}).setdefault(key, {}).setdefault(stage, []).append((step, float(value)))
        if offset and last > offset:
            starts.append(offset)
        offset = last
    return curves, starts


def _values(series: dict[str, dict[str, list[tuple[int, float]]]]) -> list[float]:
    return [v for stages in series.values() for points in stages.values() for _, v in points]


def value_scale(series: dict[str, dict[str, list[tuple[int, float]]]]) -> tuple[str, float | None]:
    """``("symlog", threshold)`` when a panel's largest value dwarfs its typical one, else ``("linear", None)``.

    WID's shrink penalty starts some 50x above the distillation loss it is added to; on a linear axis
    every other curve would be flat. The symmetric log keeps signs (the Lagrangian penalty goes negative).
    """
    magnitudes = sorted(abs(v) for v in _values(series))
    typical = magnitudes[len(magnitudes) // 2] if magnitudes else 0.0
    if typical > 0 and magnitudes[-1] > 30 * typical:
        return "symlog", typical / 10
    return "linear", None


def plot_training(log: dict[str, list[dict]], path: Path, title: str = "") -> Path:
    """Sparsity, Lagrange multipliers and losses over training, one panel each (those the log has).

    One colour per key; stage 1 solid, later stages dashed, a dotted line where the model was folded;
    a panel whose values span too wide a range gets a symmetric log scale (``value_scale``).
    """
    curves, starts = _curves(log)
    order = [p for p in ("sparsity", "Lagrange multipliers", "losses") if p in curves]
    styles = dict(zip(log, ("-", "--", ":")))
    named = {"-": "solid", "--": "dashed", ":": "dotted"}
    figure = _figure_class()(figsize=(4.6 * len(order), 3.6), layout="constrained")
    for ax, panel in zip(figure.subplots(1, len(order), squeeze=False)[0], order):
        for number, (key, stages) in enumerate(curves[panel].items()):
            for first, (stage, points) in enumerate(stages.items()):
                steps, values = zip(*points)
                ax.plot(steps, values, color=f"C{number % 10}", linestyle=styles.get(stage, "-"),
                        label=None if first else key)
        for step in starts:
            ax.axvline(step, color="0.5", linestyle=":", linewidth=1)
        scale, threshold = value_scale(curves[panel])
        if threshold is not None:
            ax.set_yscale(scale, linthresh=threshold)
            if min(_values(curves[panel])) >= 0:
                ax.set_ylim(bottom=0)
        ax.set_title(panel if threshold is None else f"{panel} (symmetric log scale)")
        ax.set_xlabel("optimiser step (" + ", then ".join(f"{stage} {named[styles[stage]]}" for stage in styles) + ")")
        ax.legend(fontsize=7)
    figure.suptitle(f"{title}: training" if title else "training")
    figure.savefig(path, dpi=110)
    return path
