"""What ONNX and int8 buy a MiniLM student on CPU: size, latency and fidelity, torch fp32 vs ONNX fp32 vs ONNX int8.

The student is ``--student DIR`` (a `compress run` folder of the MiniLM teacher), or by default one built
in a temporary folder by a short run: the 50% structure taken one-shot (``train.max_steps=0``), then
``--steps`` steps of stage-2 distillation. ``compress.onnx_export`` writes and checks both ONNX files.
Latency is onnxruntime's (and torch's) median over interleaved rounds at batch x seq tokens, both with
``--threads`` threads (default 1: on a shared machine torch's 2-thread latency collapses under other
load, so 1 thread compares the runtimes fairly there). Fidelity is ``compress.evaluate``'s Spearman of
pairwise cosine similarities on the held-out snippets of the built-in corpus (embedded with the student
folder's pooling, the teacher's), against the teacher and against the fp32 student. Prints a table and
writes JSON.

    python benchmarks/onnx_int8.py [--student DIR] [--steps 30] [--batch 8] [--seq 128] [--rounds 10] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
from pathlib import Path

import onnxruntime
import torch

import compress
from compress.data import load_texts, split_held_out
from compress.evaluate import held_out_sentences, pairwise_cosine, spearman, text_embeddings
from compress.export import load_student
from compress.measure import timed_rounds, token_batch
from compress.onnx_export import FP32_FILE, INT8_FILE, ONNX_FOLDER, OnnxEncoder, export_onnx, folder_pooling
from compress.teachers import load_teacher

GRAPHS = ("onnx fp32", "onnx int8")


def short_run(out: Path, steps: int) -> Path:
    """A 50%-encoder-parameter MiniLM student: one-shot structure, then ``steps`` steps of stage-2 distillation."""
    recipe = compress.load_recipe("bert-l0").override({"train.max_steps": 0, "finetune.max_steps": steps})
    return compress.run(recipe, out=out, progress=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--student", type=Path, help="a student folder of the MiniLM teacher (default: a short run)")
    parser.add_argument("--steps", type=int, default=30, help="stage-2 steps of the default short run")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier export in STUDENT/onnx")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="torch and onnxruntime threads for the latency")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "onnx_int8.json")
    args = parser.parse_args()

    teacher, tokenizer = load_teacher()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(args.student or short_run(Path(scratch) / "student", args.steps))
        export = export_onnx(folder, quantize="int8", overwrite=args.overwrite)
        student = load_student(folder).eval()
        files = {"torch fp32": folder / "model.safetensors", "onnx fp32": folder / ONNX_FOLDER / FP32_FILE,
                 "onnx int8": folder / ONNX_FOLDER / INT8_FILE}
        texts, pooling = held_out_sentences(split_held_out(load_texts())[1]), folder_pooling(folder)
        # Fidelity (embedding_fidelity's steps, each model embedded once) with every thread, then the latency.
        graphs = {name: OnnxEncoder(files[name], student.config) for name in GRAPHS}
        similarities = {name: pairwise_cosine(text_embeddings(model, tokenizer, texts, pooling))
                        for name, model in {"teacher": teacher, "torch fp32": student, **graphs}.items()}
        torch.set_num_threads(args.threads)
        timed = {"torch fp32": student}
        timed.update({name: OnnxEncoder(files[name], student.config, args.threads) for name in GRAPHS})
        latency = timed_rounds(timed, token_batch(tokenizer.vocab_size, args.batch, args.seq), args.rounds)
        rows = [
            {
                "model": name,
                "file_mb": files[name].stat().st_size / 1e6,
                "latency_ms": latency[name] * 1e3,
                "speedup": latency["torch fp32"] / latency[name],
                "fidelity_vs_teacher": spearman(similarities["teacher"], similarities[name]),
                "fidelity_vs_fp32_student": spearman(similarities["torch fp32"], similarities[name]),
            }
            for name in timed
        ]
        structure = json.loads((folder / "compression.json").read_text())["structure"]

    print(f"MiniLM-L6 student ({structure['encoder_sparsity']:.0%} of encoder parameters removed), "
          f"batch {args.batch} x seq {args.seq}, {torch.get_num_threads()} threads, median of {args.rounds} interleaved "
          f"rounds; fidelity on {len(texts)} held-out snippets")
    print(f"{'model':12s} {'file MB':>8s} {'ms':>8s} {'speed x':>8s} {'fid/teacher':>12s} {'fid/fp32':>9s}")
    for r in rows:
        print(f"{r['model']:12s} {r['file_mb']:>8.1f} {r['latency_ms']:>8.1f} {r['speedup']:>8.2f} "
              f"{r['fidelity_vs_teacher']:>12.4f} {r['fidelity_vs_fp32_student']:>9.4f}")
    print(f"fp32 graph vs torch, max abs diff: {export.max_abs_diff}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "benchmark": "onnx_int8",
        "settings": {**{k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "out"},
                     "torch": torch.__version__,
                     "onnxruntime": onnxruntime.__version__, "machine": platform.machine()},
        "structure": structure,
        "fidelity_items": len(texts),
        "fp32_max_abs_diff": export.max_abs_diff,
        "int8_max_abs_diff": export.int8_max_abs_diff,
        "rows": rows,
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
