"""Content-hashed generated modules on disk.

Numba can only cache functions that live in a real file, and a cached
function reloads only if its module is in ``sys.modules`` under the same
name.  So each generated source is written once to
``<cache>/cs_<hash>.py`` (the hash covers the source and the kernel library),
imported under that name, and left for Numba's own cache beside it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import tempfile
from pathlib import Path
from types import ModuleType

KERNELS_FILE = Path(__file__).with_name("kernels.py")


def cache_dir() -> Path:
    """$CIRCUITSKETCH_CACHE, else ~/.cache/circuitsketch/kernels."""
    root = os.environ.get("CIRCUITSKETCH_CACHE")
    path = Path(root) if root else Path.home() / ".cache" / "circuitsketch" / "kernels"
    path.mkdir(parents=True, exist_ok=True)
    return path


def source_hash(source: str) -> str:
    h = hashlib.sha256(source.encode())
    h.update(KERNELS_FILE.read_bytes())
    return h.hexdigest()[:20]


def load_module(source: str) -> ModuleType:
    """Import generated source as a file-backed module (written atomically once)."""
    name = f"cs_{source_hash(source)}"
    if name in sys.modules:
        return sys.modules[name]
    path = cache_dir() / f"{name}.py"
    if not path.exists() or path.read_text() != source:
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            f.write(source)
        os.replace(tmp, path)
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
