"""The compiler as one list of named passes, the same for every caller.

    trace -> grad -> simplify -> fuse -> series-fuse -> lower -> emit -> compile

A ``Build`` holds the units to compile (a training program's step and output
circuits, or one circuit) and what each pass has made of them; every pass
takes the build and fills in its part.  ``CompiledProgram``, ``CompiledCircuit``
and ``circuitsketch inspect --after PASS`` all call ``run``; ``describe``
prints the product of any pass.  Set ``CIRCUITSKETCH_TIMINGS=1`` to have
``run`` print each pass's time to stderr.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType

from circuitsketch.ir import Circuit, rebuild
from circuitsketch.program import LOSS
from compiler import cache
from compiler.emit import HEADER, emit_function
from compiler.fusion import NO_FUSION, Fusion, fuse
from compiler.in_place import state_in_place
from compiler.lower import Lowered, code_of, lower, transposed_views
from compiler.passes import Activity, activity, dce, simplify, sink_elementwise
from compiler.series_fusion import MAX_DEGREE
from compiler.slots import Interface
from compiler.tables import Tables


@dataclass
class Unit:
    """One circuit on its way through the pipeline, compiled as function ``name``.

    built: the circuit as its program made it (a step: forward, backward and
    update); circuit: as the latest circuit pass left it.  entry: how the function
    is called (``emit.emit_function``).  comment: a line above it in the source.
    """

    name: str
    built: Circuit
    iface: Interface
    series_inputs: tuple[str, ...]
    state_outputs: bool
    entry: str = "njit"
    comment: str = ""
    circuit: Circuit | None = None
    act: Activity | None = None
    fusion: Fusion = field(default_factory=lambda: NO_FUSION)
    lowered: Lowered | None = None


@dataclass
class Build:
    """The units of one generated module at one degree, and what the passes made.

    optimize: run the simplifying passes; fused: fuse elementwise chains (same bits
    either way); sink: in real mode, first move each elementwise equation down to its
    first reader (``passes.sink_elementwise``; same bits; reverse runs, where it pays);
    fma: real products add each term by a fused multiply-add (other bits: reverse runs).
    in_place: the steps write the new state over the old one where that is sound for
    every step (``compiler/in_place.py``; decided when lowering, read by the training
    loop): in real mode the state, in series mode its higher orders (order 0 keeps two
    buffers there: a group's hi loop reads its operands' order 0 after its first loop
    has stored the outputs').
    title: the module docstring's first line (None: no docstring).
    footer: more source after the units' (real mode's compiled training loop).
    source: the whole generated code as one module (what ``inspect --after emit``
    prints, and what names it).  Loaded as: ``library``, module name -> text of each
    generated function (loops, parts, blocks, entries, the training loop), a module
    of its own named by its code, so that any program with the same code loads it
    compiled from the cache (a deeper model's layers, another width's step); and
    ``main_source``, the module attributes, importing them all.
    """

    units: list[Unit]
    degree: int
    optimize: bool = True
    fused: bool = True
    sink: bool = False
    fma: bool = False
    in_place: bool = False
    title: str | None = None
    footer: Callable[[Build], str] | None = None
    tables: Tables = field(default_factory=Tables)
    source: str = ""
    library: dict[str, str] = field(default_factory=dict)
    main_source: str = ""
    module: ModuleType | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def series(self) -> bool:
        return self.degree >= 1


def _forward(c: Circuit) -> Circuit:
    """A step circuit's forward pass: the loss and what it reads (no backward, no update)."""
    if LOSS not in c.outputs or len(c.outputs) == 1:
        return c
    out = rebuild(c)
    for name in [n for n in out.outputs if n != LOSS]:
        del out.outputs[name]
    return dce(out)


def _trace(b: Build) -> None:
    for u in b.units:
        u.circuit = _forward(u.built) if u.state_outputs else u.built


def _grad(b: Build) -> None:
    for u in b.units:
        u.circuit = u.built


def _simplify(b: Build) -> None:
    if b.optimize:
        for u in b.units:
            u.circuit = simplify(u.circuit)


def _hi(b: Build, u: Unit) -> list[bool]:
    return [b.series and h for h in u.act.hi]


def _fuse(b: Build) -> None:
    for u in b.units:
        if b.sink and b.fused and not b.series:
            u.circuit = sink_elementwise(u.circuit)
        u.act = activity(u.circuit, u.series_inputs)
        u.fusion = fuse(u.circuit, _hi(b, u), 0) if b.fused else NO_FUSION


def _series_fuse(b: Build) -> None:
    if b.fused and b.series and b.degree <= MAX_DEGREE:
        for u in b.units:
            u.fusion = fuse(u.circuit, _hi(b, u), b.degree)


def _lower(b: Build) -> None:
    views = {u.name: set() if b.series else transposed_views(u.circuit) for u in b.units}
    b.in_place = b.in_place and all(
        state_in_place(u.circuit, u.iface, u.fusion, views[u.name], b.series)
        for u in b.units if u.state_outputs
    )  # fmt: skip
    for u in b.units:
        u.lowered = lower(u.name, u.circuit, u.act, u.iface, b.tables, b.series,
                          u.state_outputs, u.fusion, b.in_place and u.state_outputs,
                          views[u.name], b.fma)  # fmt: skip


def _emit(b: Build) -> None:
    title = ""
    if b.title is not None:
        title = (f'"""{b.title}\n\nDo not edit: regenerated from the circuits; named by a '
                 'hash of this text.\n"""\n')  # fmt: skip
    functions: dict[str, str] = {}  # name -> definition, callees first
    attributes = []
    for u in b.units:
        emitted = emit_function(u.lowered, u.entry)
        for name, definition in emitted.library:
            functions.setdefault(name, definition)
        attributes.append((f"# {u.comment}\n" if u.comment else "") + emitted.main)
    if b.footer is not None:
        functions["run"] = b.footer(b)
    b.source = title + HEADER + "".join(functions.values()) + "".join(attributes)
    b.library, modules = {}, {}
    for name, definition in functions.items():
        code = code_of(definition)
        text = HEADER + _imports(modules, code) + code
        modules[name] = f"csf_{cache.source_hash(text)}"
        b.library[modules[name]] = text
    main = "".join(attributes)
    b.main_source = title + HEADER + _imports(modules, "", everything=True) + "\n" + main


def _imports(modules: dict[str, str], code: str, everything: bool = False) -> str:
    """Import lines of the generated functions (name -> module) that `code` calls or names
    (`everything`: all of them)."""
    used = [n for n in modules if everything or re.search(rf"\b{n}\b", code)]
    return "".join(f"from {modules[n]} import {n}\n" for n in used)


def _compile(b: Build) -> None:
    b.module = cache.load_module(b.main_source, b.library)


@dataclass(frozen=True)
class Pass:
    name: str
    run: Callable[[Build], None]
    doc: str


PASSES: list[Pass] = [
    Pass("trace", _trace, "the traced forward pass (a step circuit's loss and what it reads)"),
    Pass("grad", _grad, "reverse mode and the optimizer's update: the whole step circuit"),
    Pass("simplify", _simplify, "cse, concat lowering, constant folding, transposes, "
         "scalar reciprocals, dead code"),
    Pass("fuse", _fuse, "activity analysis; chains of elementwise order-0 values become "
         "one loop each (with sink, in real mode: each elementwise equation first moved "
         "down to its reader)"),
    Pass("series-fuse", _series_fuse, "at a degree K <= 8, long chains fuse their higher "
         "orders too"),
    Pass("lower", _lower, "in place or not; slots, instruction rows and one line of calls "
         "per equation"),
    Pass("emit", _emit, "the module's Numba source"),
    Pass("compile", _compile, "the module imported from the cache (Numba compiles it)"),
]
PASS_NAMES = tuple(p.name for p in PASSES)


def run(b: Build, until: str | None = None) -> Build:
    """Run the passes in order, stopping after `until` (default: all of them)."""
    if until is not None and until not in PASS_NAMES:
        raise ValueError(f"unknown pass {until!r} (passes: {', '.join(PASS_NAMES)})")
    timings = os.environ.get("CIRCUITSKETCH_TIMINGS")
    for p in PASSES:
        t0 = time.perf_counter()
        p.run(b)
        b.seconds[p.name] = time.perf_counter() - t0
        if timings:
            print(f"pass {p.name}: {b.seconds[p.name]:.3f} s", file=sys.stderr)
        if p.name == until:
            break
    return b


# ---------------------------------------------------------------- what a pass made
def _fused_circuit(u: Unit) -> list[str]:
    groups = {id(g): k for k, g in enumerate(u.fusion.groups)}
    lines = []
    for i in range(len(u.circuit.nodes)):
        g = u.fusion.group_of.get(i)
        mark = "" if g is None else f"[loop {groups[id(g)]}{' +hi' if g.series else ''}] "
        lines.append(mark + u.circuit.format_node(i))
    lines += [f"output {name} = %{nid}" for name, nid in u.circuit.outputs.items()]
    series = sum(g.series for g in u.fusion.groups)
    lines.append(f"# {len(u.fusion.groups)} fused loops ({series} with higher orders)")
    return lines


def describe(b: Build, after: str) -> str:
    """The product of pass `after` (run up to it) as text."""
    if after == "emit":
        return b.source
    if after == "compile":
        return (f"module {b.module.__name__} from {b.module.__file__}\n"
                + "\n".join(f"{u.name}: {len(u.lowered.lines)} instructions" for u in b.units))
    out = []
    for u in b.units:
        out.append(f"# {u.name}" + (f": {u.comment}" if u.comment else ""))
        if after == "lower":
            for lines in u.lowered.lines:
                out.extend(lines)
            out.append(f"# workspace {u.lowered.ws_size} floats, higher orders "
                       f"{u.lowered.wh_size} x B x K complex")
        elif after in ("fuse", "series-fuse"):
            out.extend(_fused_circuit(u))
        else:
            out.append(str(u.circuit))
    return "\n".join(out) + "\n"
