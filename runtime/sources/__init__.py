"""Program sources: where a training program comes from, behind one interface.

* ``base``       the ``ProgramSource`` interface, ``TrainingOptions``, ``TestRequest``.
* ``inputs``     test inputs (``TestInput``) and reading ``--test-npz`` files.
* ``microgpt``   ``MicrogptSource``: the shipped model on a documents file.
* ``user``       ``UserProgramSource``: ``--program FILE.py:FN``.
* ``user_file``  loading a user's program file.

``source_class`` picks the kind ``--program`` names; ``sketch_source``
reopens the source a sketch was made from.  These two are the only places
that choose between the kinds; everything else asks the source.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

from runtime.sources.base import ProgramSource, TestRequest, TrainingOptions
from runtime.sources.inputs import TestInput, as_test_input
from runtime.sources.microgpt import MicrogptSource
from runtime.sources.user import UserProgramSource
from runtime.store import SketchError

if TYPE_CHECKING:
    from runtime.store import Sketch

__all__ = [
    "SOURCES",
    "MicrogptSource",
    "ProgramSource",
    "TestInput",
    "TestRequest",
    "TrainingOptions",
    "UserProgramSource",
    "as_test_input",
    "check_model_settings",
    "sketch_source",
    "source_class",
]

SOURCES: dict[str, type[ProgramSource]] = {c.kind: c for c in (MicrogptSource, UserProgramSource)}


def source_class(ref: str | None) -> type[ProgramSource]:
    """The kind of source `--program REF` names: microgpt (the default) or a user's FILE.py:FN."""
    return MicrogptSource if ref is None or ref == MicrogptSource.kind else UserProgramSource


# sources reopened per sketch object: {full: (ref, source)}
_REOPENED: weakref.WeakKeyDictionary[Sketch, dict[bool, tuple[str | None, ProgramSource]]] = (
    weakref.WeakKeyDictionary()
)


def sketch_source(sketch: Sketch, ref: str | None = None, full: bool = False) -> ProgramSource:
    """The source `sketch` was made from, reopened once per sketch and checked against it.

    `ref` (the --program given with the sketch) says where a user program's
    file is now; later calls without it reuse what it opened.  `full` asks
    for the exact initial parameters (to retrain), not only the circuits.
    """
    kind = sketch.config.get("program")
    cls = SOURCES.get(kind)  # type: ignore[arg-type]
    if cls is None:
        raise SketchError(f"sketch {str(sketch.path)!r} was made from an unknown program {kind!r}")
    opened = _REOPENED.setdefault(sketch, {})
    hit = opened.get(full)
    if hit is not None and ref in (None, hit[0]):
        return hit[1]
    source = cls.reopen(sketch, ref, full)
    opened[full] = (ref, source)
    return source


def check_model_settings(sketch: Sketch, asked: dict) -> None:
    """ValueError naming the first of the model settings `asked` (e.g. {"n_layer": 2}) that
    differs from the model `sketch` was made of."""
    cls = SOURCES.get(sketch.config.get("program"))  # type: ignore[arg-type]
    if cls is None:
        raise SketchError(f"sketch {str(sketch.path)!r} was made from an unknown program")
    cls.check_model(sketch, asked)
