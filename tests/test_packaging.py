"""The wheel `pip install .` builds holds every module of the three packages.

CI installs the project editable (``-e``), which imports from the source tree
and so cannot notice a subpackage missing from the packaging; the README's
first command installs the wheel.  This builds it from a copy of the sources
(a build in the tree would reuse its ``build/`` folder, which may hold modules
the packaging no longer names) and compares its file list with the tree.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("circuitsketch", "compiler", "runtime")


def test_the_wheel_holds_every_module_and_the_corpus(tmp_path):
    src = tmp_path / "src"
    skip = shutil.ignore_patterns("__pycache__", "build", "*.egg-info")
    for pkg in PACKAGES:
        shutil.copytree(ROOT / pkg, src / pkg, ignore=skip)
    for f in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / f, src / f)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(src)],
        check=True, capture_output=True, cwd=tmp_path,
    )
    (wheel,) = tmp_path.glob("circuitsketch-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    tree = {
        p.relative_to(ROOT).as_posix()
        for pkg in PACKAGES
        for p in (ROOT / pkg).rglob("*.py")
        if "__pycache__" not in p.parts
    }
    assert tree and not (tree - names), sorted(tree - names)
    assert "circuitsketch/data/names.txt" in names
