"""Emission: print a lowered function (``compiler/lower.py``) as Numba source.

A run of lines that repeats (a layer) is printed once, as a block function
called at each place (``compiler/outline.py``); the other lines are split into
parts of at most ``PART_NODES`` lines, since Numba's compile time grows with
function length.  Loops, blocks and parts are named by their code
(``lower.content_name``), so equal code in any two programs is one function,
compiled once (``pipeline._emit`` makes each a module of its own).  Numba
links every library a function calls into that function's own module and
optimises the whole again, so parts and blocks call their kernels and loops
through pointers (``compiler/pointers.py``) and link none of them; steps are
inlined into real mode's compiled training loop, and series mode loops over
steps in Python.
"""

from __future__ import annotations

from dataclasses import dataclass

from compiler.lower import DECO, NAME, Lowered, content_name
from compiler.outline import outline
from compiler.pointers import Call, through_pointers

PART_NODES = 480
HEADER = (
    "import math\n\nimport numpy as np\nfrom numba import njit\n\n"
    "from compiler import kernels as k\nfrom compiler import pointers as p\n\n"
)


class CodeBuilder:
    """Indented lines."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.depth = 0

    def line(self, text: str = "") -> None:
        self.lines.append("    " * self.depth + text if text else "")

    def indent(self) -> None:
        self.depth += 1

    def dedent(self) -> None:
        self.depth -= 1

    def source(self) -> str:
        return "\n".join(self.lines) + "\n"


def signature(series: bool) -> str:
    if series:
        return (
            "s_in, s_out, h_in, h_out, ws, wh, tab, cst, ii, ff, w0, wpsi, res0, resh, code, B, K"
        )
    return "s_in, s_out, ws, tab, cst, ii, ff, w0, res0, code"


@dataclass
class Emitted:
    """A lowered function as source: its library functions and the rest.

    library: (name, definition) of its generated loops, parts and blocks, each named by
    its code (``lower.content_name``), and of its entry function (if any), callees
    first; main: the module attributes, which name library functions.
    """

    library: list[tuple[str, str]]
    main: str


def emit_function(f: Lowered, entry: str = "njit") -> Emitted:
    """Source of the njit function ``f.name``: its parts, blocks and loops, and itself.

    The entry function runs the parts and returns whether the results are finite.
    entry: "njit" (called from Python), "inline" (only called from other generated
    code, which inlines it at Numba IR level, so it is not one more library
    re-optimising all its parts and kernels) or "none" (no entry function: the
    caller runs the parts itself).  Module attributes ``<name>_WS`` / ``<name>_WH``
    give the workspace sizes (hi in units of B*K), ``<name>_PARTS`` the parts and
    blocks to run in order (a block once per place) and ``<name>_FIRST_ROW`` the
    instruction row they start at.  The parts and blocks call their kernels and loops
    through pointers (``compiler/pointers.py``): each takes its table of addresses as
    one more argument, P, and the entry function one more argument, PT, the tables of
    its distinct parts and blocks one after another, in the order of ``<name>_PARTS``.
    """
    if entry not in ("njit", "inline", "none"):
        raise ValueError(f"entry must be 'njit', 'inline' or 'none', got {entry!r}")
    name, args = f.name, signature(f.series)
    library = [(_name_of(loop), loop) for loop in f.loops]
    calls: list[str] = []  # the functions the step runs, in order
    sites: dict[str, int] = {}  # calls through the table of each part and block
    for start, stop, block in outline([lines[-1] for lines in f.lines]):
        if block is not None:
            pieces = [("block", f.lines[start:stop])]
        else:
            pieces = [("part", f.lines[a : min(a + PART_NODES, stop)])
                      for a in range(start, stop, PART_NODES)]  # fmt: skip
        for kind, body in pieces:
            text, called = _define_piece(args, body)
            fn = content_name(kind, text)
            if fn not in calls:
                library.append((fn, text.replace(f"def {NAME}(", f"def {fn}(", 1)))
                sites[fn] = called
            calls.append(fn)
    cb = CodeBuilder()
    if entry != "none":
        cb.line(DECO[:-1] + ", inline='always')" if entry == "inline" else DECO)
        cb.line(f"def {name}({args}, PT):")
        cb.indent()
        cb.line(f"r = code.shape[0] * 0 + {f.first_row}")
        if f.state_outputs and not f.series:
            cb.line("res0[-1] = 0.0  # what the fused loops that write the state return")
        offsets: dict[str, int] = {}  # of each distinct part's table in PT
        for fn in calls:
            o = offsets.setdefault(fn, sum(sites[g] for g in offsets))
            cb.line(f"r = {fn}({args}, r, PT[{o}:{o + sites[fn]}])")
        cb.line(f"return {_finite(f)}")
        cb.dedent()
        cb.line()
        cb.line()
        library.append((name, cb.source()))
        cb = CodeBuilder()
    if f.series and f.state_outputs:
        cb.line(f"{name}_UNCHECKED_HI = {f.unchecked!r}  # state hi the caller checks itself")
    cb.line(f"{name}_WS = {f.ws_size}")
    cb.line(f"{name}_WH = {f.wh_size}")
    cb.line(f"{name}_FIRST_ROW = {f.first_row}")
    cb.line(f"{name}_PARTS = ({''.join(f'{fn}, ' for fn in calls)})")
    cb.line()
    return Emitted(library, cb.source())


def _finite(f: Lowered) -> str:
    """The entry function's result: whether what the step wrote is finite.  A real step
    adds what its fused loops found (res0[-1]) to a check of the state they did not
    write, so the whole new state is not read again after every step."""
    if not f.state_outputs:
        return "k.all_finite(res0)"
    if f.series:
        return f"k.all_finite(s_out) and k.all_finite_c({f.hi_state})"
    rest = "".join(f" and k.all_finite({f.state}[{a}:{a + n}])" for a, n in f.unchecked)
    return "res0[-1] == 0.0" + rest


def _name_of(definition: str) -> str:
    return definition.split("def ", 1)[1].split("(", 1)[0]


def _define_piece(args: str, body: list[list[str]]) -> tuple[str, int]:
    """A part or block, named ``NAME``: its lines (comments and calls), each advancing
    the row r, its calls made through the table of one more argument, P.  Returns the
    text and the number of calls through P."""
    cb = CodeBuilder()
    cb.line(DECO)
    cb.line(f"def {NAME}({args}, r, P):")
    cb.indent()
    called: list[Call] = []
    for lines in body:
        for line in lines[:-1]:
            cb.line(line)
        cb.line(f"{through_pointers(lines[-1], called)}; r += 1")
    cb.line("return r")
    cb.dedent()
    cb.line()
    cb.line()
    return cb.source(), len(called)
