"""The ``compress`` command: ``compress run RECIPE ...``, ``compress report DIR``, ``compress export DIR --onnx``,
``compress prune-vocab DIR --data CORPUS --out OUT`` and ``compress recipes``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from compress.errors import CompressError, Interrupted
from compress.outputs import FIDELITY_KEYS
from compress.recipe import bundled_recipes, load_recipe, parse_yaml
from compress.structure import Structure


def _parse_override(text: str) -> tuple[str, object]:
    if "=" not in text:
        raise CompressError(f"override {text!r} is not key=value (e.g. prune.target_sparsity=0.6)")
    key, _, value = text.partition("=")
    return key.strip(), parse_yaml(value, f"the value of override {text!r}")


def _cmd_run(args: argparse.Namespace) -> int:
    # Training and export load torch, transformers and datasets: only the commands that need them import them.
    from compress.export import RECORD_FILE
    from compress.outputs import SUMMARY_MARKER
    from compress.pipeline import is_main_process, run
    from compress.report import fidelity_line

    # Overrides go to the run apart from the recipe: an explicit prune.axes is a request the generic path checks.
    overrides = dict(_parse_override(o) for o in args.overrides)
    out = run(
        load_recipe(args.recipe), overrides=overrides, teacher=args.teacher, data=args.data, out=args.out,
        overwrite=args.overwrite, resume=args.resume, keep_checkpoints=args.keep_checkpoints,
        progress=not args.no_progress, generic=args.generic,
    )
    if not is_main_process():
        return 0
    shown = args.out or out.name  # as the user named it (the run resolves it)
    if (Path(out) / SUMMARY_MARKER).is_file():
        print(sizes_table(json.loads((Path(out) / SUMMARY_MARKER).read_text(encoding="utf-8")), shown))
        return 0
    record = json.loads((Path(out) / RECORD_FILE).read_text(encoding="utf-8"))
    print(f"student written to {shown} ({record['format']} config, model_type {record['model_type']})")
    print(Structure.from_dict(record["structure"]).summary())
    fidelity = fidelity_line(record.get("metrics", {}))
    if fidelity:
        print(fidelity)
    for warning in record.get("metrics", {}).get("warnings", []):
        print(f"compress: warning: {warning}", file=sys.stderr)
    return 0


def sizes_table(summary: dict, shown: str) -> str:
    """The students of a multi-size run (its ``students.json``), one line each."""
    lines = [f"{len(summary['students'])} students written to {shown} in {summary['minutes']:.1f} min:"]
    lines.append(f"{'folder':16s} {'encoder removed':>15s} {'parameters':>12s} {'MACs ratio':>10s} {'fidelity':>9s}")
    for row in summary["students"]:
        fidelity = next((row[key] for key in reversed(FIDELITY_KEYS) if key in row), None)
        shown_fidelity = f"{fidelity:9.3f}" if fidelity is not None else f"{'-':>9s}"
        lines.append(
            f"{row['folder']:16s} {row['encoder_sparsity']:15.1%} {row['parameters']:12,d} "
            f"{row['macs_ratio']:10.3f} {shown_fidelity}"
        )
    return "\n".join(lines)


def _cmd_recipes(args: argparse.Namespace) -> int:
    for name in bundled_recipes():
        recipe = load_recipe(name)
        prune = recipe.prune
        target = prune["target"] or f"{prune['target_sparsity']:.0%} of encoder parameters"
        print(f"{name:24s} family={recipe.family:8s} method={prune['method']:10s} target={target}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from compress.report import build_report

    report = build_report(
        args.dir, teacher=args.teacher, latency=not args.no_latency, plots=not args.no_plots, plot_dir=args.plot_dir,
        batch=args.batch, seq=args.seq, seconds=args.seconds, rounds=args.rounds,
    )
    print(report.text())
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from compress.onnx_export import export_onnx

    print(export_onnx(args.dir, quantize=args.quantize, overwrite=args.overwrite, data=args.data).text())
    return 0


def _weights_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.glob("*.safetensors")) / 1e6


def _cmd_prune_vocab(args: argparse.Namespace) -> int:
    from compress.export import RECORD_FILE
    from compress.vocabulary import RECORD_KEY, prune_vocabulary

    out = prune_vocabulary(
        args.dir, args.data, args.out, min_count=args.min_count, overwrite=args.overwrite, progress=not args.no_progress
    )
    kept = json.loads((out / RECORD_FILE).read_text(encoding="utf-8"))[RECORD_KEY]
    print(
        f"vocabulary pruned: {kept['original_size']:,} -> {kept['kept_size']:,} embedding rows, weights "
        f"{_weights_mb(Path(args.dir)):.1f} MB -> {_weights_mb(out):.1f} MB; student written to {args.out}"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="compress", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="compress a teacher with a recipe and export the student")
    run.add_argument("recipe", help="bundled recipe name (see `compress recipes`) or path to a .yaml file")
    run.add_argument("--teacher", help="Hugging Face model folder (default: the MiniLM teacher of the demo extra)")
    run.add_argument("--data", help="text corpus: a .txt/.jsonl/.csv/.parquet file, a save_to_disk folder, a hub "
                     "dataset id, a built-in corpus (python-docs, wordnet, sotu), or several joined by + "
                     "(default: the recipe's data.text, the built-in python-docs corpus); for a speech "
                     "teacher: a folder of .wav/.flac files or a dataset with an audio column (default: data.audio)")
    run.add_argument("--out", help="output folder (default: ./<recipe name>-student)")
    run.add_argument("--overwrite", action="store_true",
                     help="replace an earlier student in --out once the new one is complete (or an unfinished run beside it)")
    run.add_argument("--resume", action="store_true", help="continue an interrupted run for --out from its last checkpoint")
    run.add_argument("--keep-checkpoints", action="store_true",
                     help="keep OUT.checkpoints (beside --out) after a successful run; removed by default")
    run.add_argument("--no-progress", action="store_true", help="no progress bars (logs only)")
    run.add_argument("--generic", action="store_true",
                     help="prune FFN units only, on the generic path for any transformers encoder (chosen with a "
                     "notice when no family adapter fits the teacher); saves the teacher's stock config")
    run.add_argument("overrides", nargs="*", metavar="key=value", help="recipe overrides, e.g. prune.target_sparsity=0.6")
    run.set_defaults(func=_cmd_run)
    report = sub.add_parser("report", help="per-layer structure, parameters, MACs and CPU latency of a run, with plots")
    report.add_argument("dir", help="a run's output folder (holds compression.json)")
    report.add_argument("--teacher", help="the teacher's model folder (default: the one compression.json names)")
    report.add_argument("--no-latency", action="store_true", help="skip the CPU latency measurement")
    report.add_argument("--no-plots", action="store_true", help="write no PNGs (matplotlib not needed)")
    report.add_argument("--plot-dir", help="where the PNGs go (default: DIR)")
    report.add_argument("--batch", type=int, default=8, help="latency batch size (default 8)")
    report.add_argument("--seq", type=int, default=128, help="tokens per sequence for MACs and latency (default 128)")
    report.add_argument("--seconds", type=float, default=1.0, help="speech: seconds of audio per input (default 1)")
    report.add_argument("--rounds", type=int, default=10, help="latency: timed rounds per model (default 10)")
    report.set_defaults(func=_cmd_report)
    export = sub.add_parser("export", help="write a student as ONNX (DIR/onnx/model.onnx), checked against torch")
    export.add_argument("dir", help="a student folder written by `compress run` (holds compression.json)")
    export.add_argument("--onnx", action="store_true", required=True, help="export to ONNX (the one format so far)")
    export.add_argument("--quantize", choices=["int8"],
                        help="also write DIR/onnx/model_int8.onnx (dynamic int8) and score its fidelity vs the student")
    export.add_argument("--data", help="texts (or for speech, audio) to score the int8 model on; their held-out split "
                        "is used as the run split its data (default for text: the run's data.text corpus)")
    export.add_argument("--overwrite", action="store_true", help="replace an earlier export in DIR/onnx")
    export.set_defaults(func=_cmd_export)
    vocab = sub.add_parser("prune-vocab", help="copy a text student keeping only the tokens a corpus uses (smaller "
                           "embeddings and MLM decoder, a matching WordPiece tokenizer)")
    vocab.add_argument("dir", help="a student folder written by `compress run` (holds compression.json)")
    vocab.add_argument("--data", required=True, help="the corpus whose tokens are kept: a .txt/.jsonl/.csv/.parquet "
                       "file, a save_to_disk folder, a hub dataset id, a built-in corpus (python-docs, wordnet, sotu), or several joined by +")
    vocab.add_argument("--out", required=True, help="output folder for the pruned student (never DIR itself)")
    vocab.add_argument("--min-count", type=int, default=1,
                       help="keep a token used at least this many times in the corpus (default 1: every used token)")
    vocab.add_argument("--overwrite", action="store_true", help="replace an earlier student in --out once the new one is complete")
    vocab.add_argument("--no-progress", action="store_true", help="no progress bars")
    vocab.set_defaults(func=_cmd_prune_vocab)
    recipes = sub.add_parser("recipes", help="list the bundled recipes")
    recipes.set_defaults(func=_cmd_recipes)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # Overrides may come after options (``--out x key=value``): argparse leaves those over.
    args, extra = parser.parse_known_args(argv)
    stray = [e for e in extra if e.startswith("-") or "=" not in e or args.command != "run"]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    try:
        return args.func(args)
    except Interrupted as err:
        print(f"compress: {err}", file=sys.stderr)
        return 130
    except CompressError as err:
        print(f"compress: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader of the output went away (compress recipes | head): not an error
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - replaces the closed stream for the interpreter's exit
        return 0


if __name__ == "__main__":
    sys.exit(main())
