"""The bundled recipes ship as package data of compress (``compress.recipes``), never as a top-level ``recipes``.

A top-level ``recipes`` package collides with any ``recipes/`` package in the user's working
directory (Python puts it first on sys.path), so ``compress run bert-l0`` could read their file
instead of ours. pyproject.toml maps the repository's ``recipes/`` folder to ``compress.recipes``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("compress", "pruners", "reparam")
BUNDLED = sorted(p.name for p in (ROOT / "recipes").glob("*.yaml"))


def _python(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter from ``cwd``, offline, as a user's script would run."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def _decoy_recipes(folder: Path) -> Path:
    """A working directory holding its own ``recipes`` package whose bert-l0.yaml is not a valid recipe."""
    (folder / "recipes").mkdir(parents=True)
    (folder / "recipes" / "__init__.py").write_text("", encoding="utf-8")
    (folder / "recipes" / "bert-l0.yaml").write_text("name: mine\nbogus: 1\n", encoding="utf-8")
    return folder


def test_compress_recipes_is_the_bundled_package_and_no_top_level_recipes_is_installed(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = _python("import importlib.util; assert importlib.util.find_spec('recipes') is None", cwd=empty)
    assert proc.returncode == 0, f"a top-level `recipes` package is installed:\n{proc.stderr[-2000:]}"

    proc = _python(
        """
        import importlib.resources as r
        folder = r.files('compress.recipes')
        print(folder)
        print(folder.joinpath('bert-l0.yaml').read_text(encoding='utf-8'))
        """,
        cwd=_decoy_recipes(tmp_path / "user"),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    location, text = proc.stdout.split("\n", 1)
    assert not Path(location).resolve().is_relative_to(tmp_path.resolve()), location
    assert "method: l0" in text and "bogus" not in text


def test_load_recipe_ignores_a_recipes_package_in_the_working_directory(tmp_path):
    proc = _python(
        """
        import compress
        print(compress.load_recipe('bert-l0').prune['method'])
        print(' '.join(compress.bundled_recipes()))
        """,
        cwd=_decoy_recipes(tmp_path),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    method, names = proc.stdout.splitlines()
    assert method == "l0"
    assert names.split() == [name.removesuffix(".yaml") for name in BUNDLED]


def test_wheel_holds_every_module_and_the_recipes_under_compress(tmp_path):
    """Build a wheel from a copy of the tree (so no build/ lands in the checkout) and compare it with the disk."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    for name in (*PACKAGES, "recipes"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(tmp_path / "wheels"),
                           str(source)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (wheel,) = (tmp_path / "wheels").glob("*.whl")
    files = {name for name in zipfile.ZipFile(wheel).namelist() if ".dist-info/" not in name}

    on_disk = {p.relative_to(source).as_posix() for package in PACKAGES for p in (source / package).rglob("*.py")}
    expected = on_disk | {"compress/recipes/__init__.py", *(f"compress/recipes/{name}" for name in BUNDLED)}
    assert not {name for name in files if name.startswith("recipes/")}, "the wheel installs a top-level recipes/"
    assert files == expected, (
        f"missing from the wheel: {sorted(expected - files)} (a new subpackage goes in [tool.setuptools] packages "
        f"in pyproject.toml); unexpected: {sorted(files - expected)}"
    )
