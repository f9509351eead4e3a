"""The op registry's entries, one module per family of primitives.

Importing this package registers every op (``circuitsketch.ir.OPS``); the
public function of each primitive (``exp``, ``gather``, ...) is
re-exported here and from ``circuitsketch``.
"""

from circuitsketch.ops import elementwise, piecewise, structure
from circuitsketch.ops.elementwise import *  # noqa: F403 - the primitives' functions
from circuitsketch.ops.piecewise import *  # noqa: F403
from circuitsketch.ops.structure import *  # noqa: F403

__all__ = [*elementwise.__all__, *piecewise.__all__, *structure.__all__]
