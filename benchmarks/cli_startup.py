"""How long does the CLI take to start? Wall time of `compress --help`, `compress recipes` and `import compress`.

Each command runs in a fresh process from an empty temporary folder (so the checkout is not on
sys.path and the installed package is what starts), once untimed to warm the disk cache and check it
succeeds, then --runs times in interleaved rounds so machine noise hits all alike. Prints median and
min wall seconds and writes JSON. The target is under 2 s for the CLI commands.

    python benchmarks/cli_startup.py [--runs 5] [--out benchmarks/results/cli_startup.json]
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_S = 2.0


def compress_command() -> list[str]:
    """The console script of the venv running this benchmark, else the CLI module run by this interpreter."""
    script = shutil.which("compress", path=str(Path(sys.executable).parent)) or shutil.which("compress")
    return [script] if script else [sys.executable, "-m", "compress.cli"]


def run_once(argv: list[str], cwd: Path) -> float:
    """Wall seconds of one run; a failing command raises, since timing a crash would mean nothing."""
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=600)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "cli_startup.json")
    args = parser.parse_args()

    cli = compress_command()
    commands = {
        "compress --help": [*cli, "--help"],
        "compress recipes": [*cli, "recipes"],
        "python -c 'import compress'": [sys.executable, "-c", "import compress"],
    }
    times: dict[str, list[float]] = {name: [] for name in commands}
    with tempfile.TemporaryDirectory() as folder:
        cwd = Path(folder)
        for argv in commands.values():
            run_once(argv, cwd)  # warm-up
        for _ in range(args.runs):
            for name, argv in commands.items():
                times[name].append(run_once(argv, cwd))

    settings = {
        "runs": args.runs,
        "cli": cli,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": importlib.metadata.version("torch"),
        "machine": platform.machine(),
        "date": datetime.date.today().isoformat(),
    }
    rows = [{"command": name, "argv": commands[name], "median_s": statistics.median(values), "min_s": min(values),
             "times_s": values} for name, values in times.items()]
    print(f"CLI startup, {' '.join(cli)}, median and min of {args.runs} interleaved runs after a warm-up, "
          f"{settings['cpu_count']} CPUs, Python {settings['python']}, torch {settings['torch']}")
    print(f"{'command':30s} {'median s':>9s} {'min s':>7s}")
    for r in rows:
        print(f"{r['command']:30s} {r['median_s']:>9.2f} {r['min_s']:>7.2f}")
    print(f"target: CLI commands under {TARGET_S:.0f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {"benchmark": "cli_startup", "settings": settings, "target_s": TARGET_S, "rows": rows}
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
