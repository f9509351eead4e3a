"""Compiled code on disk, under a key that covers everything it was built from.

Layout (``<cache>`` is $CIRCUITSKETCH_CACHE, else ~/.cache/circuitsketch/kernels)::

    <cache>/<key>/cs_<hash>.py   generated modules, named by a hash of their text
    <cache>/<key>/csf_<hash>.py  the generated functions they import, one per module,
                                 named by a hash of its code (``compiler/pipeline.py``):
                                 shared by every program that has the same code
    <cache>/<key>/numba/         Numba's cache of those modules and of the library
                                 kernels (kernels.py, gemm.py)

The key (``compiler_key``) is a sha256 of the full text of every ``.py`` file
of ``compiler/`` and ``circuitsketch/`` (generated code is built from and
links them; hashing both packages whole over-includes, which only costs a
recompile), the Python, numpy, numba and llvmlite versions, and the CPU
target (LLVM triple, CPU name and features, as Numba compiles for them).
Numba's own check is not enough: it reuses a cached function while the
function's own file is unchanged, even when a function it calls (gemm.py)
changed, and a generated module's text says nothing about the kernels it
links.  So any change to the compiler, or an upgrade, starts a fresh
directory (one cold compile); old directories are left for the user to delete.

Numba fixes a function's cache location when the function is decorated, so
``compiler/__init__.py`` calls ``configure_numba`` before any kernel module
runs its ``@njit(cache=True)``, and ``load_module`` does it again before
executing generated code.  ``numba.config.CACHE_DIR`` is process-wide: in a
process that imports ``compiler``, a user-set NUMBA_CACHE_DIR is overridden
(a cache directory that is not keyed would be unsound), and other packages'
functions decorated afterwards are cached under ``<cache>/<key>/numba`` too.

Numba can only cache functions that live in a real file, and a cached
function reloads only if its module is in ``sys.modules`` under the same
name: so each generated source is written once to its file, imported under
that name and registered in ``sys.modules``.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import platform
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType

PACKAGES = ("compiler", "circuitsketch")
"""The packages whose sources the key covers (sibling directories of this file's)."""

ROOT = Path(__file__).resolve().parent.parent


def cache_root() -> Path:
    """$CIRCUITSKETCH_CACHE, else ~/.cache/circuitsketch/kernels (not created here)."""
    root = os.environ.get("CIRCUITSKETCH_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "circuitsketch" / "kernels"


def source_files(root: Path = ROOT) -> list[Path]:
    """Every .py file of the keyed packages under `root`, in a fixed order."""
    files: list[Path] = []
    for pkg in PACKAGES:
        files.extend(p for p in (root / pkg).rglob("*.py") if "__pycache__" not in p.parts)
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def sources_digest(root: Path = ROOT) -> str:
    """sha256 over the relative path and full text of every file of ``source_files``."""
    h = hashlib.sha256()
    for p in source_files(root):
        data = p.read_bytes()
        h.update(f"{p.relative_to(root).as_posix()}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()


def toolchain() -> dict[str, str]:
    """The versions and CPU target that compiled machine code depends on."""
    import llvmlite
    import llvmlite.binding as ll
    import numba
    import numpy
    from numba.core import config
    from numba.core.codegen import get_host_cpu_features

    features = config.CPU_FEATURES
    return {
        "python": f"{platform.python_implementation()} {sys.version}",
        "numpy": numpy.__version__,
        "numba": numba.__version__,
        "llvmlite": llvmlite.__version__,
        "triple": ll.get_process_triple(),
        "cpu": config.CPU_NAME or ll.get_host_cpu_name(),
        "features": features if features is not None else get_host_cpu_features(),
    }


def compiler_key(root: Path | None = None) -> str:
    """The cache key: the sources of the keyed packages under `root` and the toolchain.

    Default `root`: the running code's, computed once per process (about a
    millisecond); another root (tests, on a copy of the tree) is hashed anew.
    """
    return _running_key() if root is None else _key(root)


def _key(root: Path) -> str:
    h = hashlib.sha256(sources_digest(root).encode())
    h.update(repr(sorted(toolchain().items())).encode())
    return h.hexdigest()[:20]


@functools.cache
def _running_key() -> str:
    return _key(ROOT)


def cache_dir() -> Path:
    """<cache>/<key>: where this code's generated modules live (created)."""
    path = cache_root() / compiler_key()
    path.mkdir(parents=True, exist_ok=True)
    return path


def numba_cache_dir() -> Path:
    """<cache>/<key>/numba: Numba's on-disk cache for this code."""
    return cache_root() / compiler_key() / "numba"


def configure_numba() -> None:
    """Point Numba's cache at ``numba_cache_dir()`` (see the module docstring)."""
    from numba.core import config

    config.CACHE_DIR = str(numba_cache_dir())


def source_hash(source: str) -> str:
    """Name of a generated module: a hash of its text (its directory holds the key)."""
    return hashlib.sha256(source.encode()).hexdigest()[:20]


def load_module(source: str, library: Mapping[str, str] | None = None) -> ModuleType:
    """Import generated source as a file-backed module (written atomically once), after
    the modules it imports from `library` (module name -> text, in the order to load:
    named by their code, they are shared by every program whose code has them)."""
    for name, text in (library or {}).items():
        _load(name, text)
    return _load(f"cs_{source_hash(source)}", source)


def _load(name: str, source: str) -> ModuleType:
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
    configure_numba()  # again: Numba resets it if a NUMBA_ variable changed since
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
