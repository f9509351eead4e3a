"""Loop fusion of order-0 elementwise chains: one generated loop per chain.

Run as one kernel per equation, a chain of same-size elementwise equations
makes one pass over memory per equation; Adam's update is fourteen of them per
parameter, half of them a broadcast scalar times a vector.  Fused, the chain
reads its operands once, keeps intermediate values in registers and writes only
the values read after it: on microgpt's real step it halves the time of Adam's
equations and the number of kernel calls (bench/RESULTS.md).

The scalar expressions (each op's registry ``Code.scalar``) are those of the
order-0 kernels, operation for operation, so fused code gives the same bits as unfused code
(``test_fused_loops_give_the_same_bits`` keeps the two in step: a one-ulp
change to either fails it).  In series mode at a fixed degree K <=
``series_fusion.MAX_DEGREE``, series values fuse too: the group's function
then runs a second loop over the higher orders (``compiler/series_fusion.py``),
reading the order-0 values its rules need from the first loop's results;
otherwise only values without higher orders fuse.  In a circuit without series
values, a broadcast of each row's value (a norm's scale, a softmax's maximum) or
of a column's (a bias) is read where its source lies by a loop over rows, instead
of being written out by a kernel of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from circuitsketch.ir import Circuit, Node, Op, opdef
from compiler import series_fusion as F
from compiler.layout import E0, N
from compiler.series_fusion import MAX_DEGREE, Hi, Writer
from compiler.series_rules import SERIES, series_rule


def _fused_rule(op: Op) -> F.Rule | None:
    """The fused form of op's series rule, if it has one."""
    name = opdef(op).code.series
    return SERIES[name].fused if name in SERIES else None


def _needs0(op: Op, hi: Sequence[bool]) -> tuple[tuple[int, ...], bool]:
    return series_rule(opdef(op).code.series, op.value).needs0(hi)


@dataclass
class Group:
    """A run of fused equations, computed in one call where its last member stands."""

    members: list[int]
    outputs: list[int]  # members read after the group (or circuit outputs)
    needs0: list[int] = field(default_factory=list)  # order 0 read only by the hi loop
    series: bool = False  # some member has higher orders: the group runs a hi loop too
    width: int = 0  # members read broadcasts of this stride (``stride``): a loop over rows

    @property
    def end(self) -> int:
        return self.members[-1]


@dataclass
class Fusion:
    groups: list[Group]
    group_of: dict[int, Group]
    absorbed: set[int]  # broadcasts of a scalar read only by fused members: never emitted
    has_hi: Sequence[bool] = ()
    degree: int = 0  # K unrolled into series groups (0: none)

    def through(self, c: Circuit, j: int, g: Group) -> bool:
        """Whether the members of g read node j, a broadcast, as its source: a scalar, or
        a vector repeated with g's stride (``stride``)."""
        if self.has_hi and self.has_hi[j]:
            return False
        return _scalar_broadcast(c, j) or (g.width > 0 and stride(c, j)[1] == g.width)

    def reads(self, c: Circuit, i: int) -> list[int]:
        """The nodes equation i reads.  A fused member reads a broadcast's source where
        ``through`` says so (as ``fused_call`` does, absorbed or not); nothing else reads
        an absorbed one."""
        g = self.group_of.get(i)
        return [
            c.nodes[j].inputs[0] if g is not None and self.through(c, j, g) else j
            for j in c.nodes[i].inputs
        ]

    def at(self, i: int) -> int:
        """The equation index at which node i's code runs."""
        g = self.group_of.get(i)
        return g.end if g is not None else i


NO_FUSION = Fusion([], {}, set())


def _scalar_broadcast(c: Circuit, j: int) -> bool:
    node = c.nodes[j]
    return node.op is Op.BROADCAST and c.nodes[node.inputs[0]].size == 1


def stride(c: Circuit, j: int) -> tuple[str, int]:
    """How broadcast j repeats a vector along the flat index: ("row", w) when element i
    is source element i // w (trailing axes added: a norm's or a softmax's value per
    row), ("col", w) when it is source element i % w (leading axes added: a bias);
    ("", 0) for anything else.  Fused members read such a source where it lies, in a
    loop over rows of w elements, and the broadcast is never written out."""
    node = c.nodes[j]
    if node.op is not Op.BROADCAST:
        return "", 0
    src = c.nodes[node.inputs[0]]
    if src.size in (1, node.size):
        return "", 0
    full = tuple(node.attrs[0])
    s = (1,) * (len(full) - len(src.shape)) + tuple(src.shape)
    for k in range(len(full) + 1):
        if s == full[:k] + (1,) * (len(full) - k):
            return "row", node.size // src.size
        if s == (1,) * k + full[k:]:
            return "col", src.size
    return "", 0


def _scalar_of_sources(c: Circuit, j: int) -> bool:
    """A scalar computed from inputs and constants only (1 / bias1, from
    ``passes.scalar_reciprocals``): it reads no member, so it does not break a run."""
    node = c.nodes[j]
    return node.size == 1 and all(c.nodes[k].op in (Op.INPUT, Op.CONST) for k in node.inputs)


def uniform_const(c: Circuit, j: int) -> float | None:
    """The value of a constant whose elements are all one finite float, else None."""
    node = c.nodes[j]
    if node.op is not Op.CONST or node.dtype != "float":
        return None
    v = np.asarray(c.consts[j], dtype=np.float64).ravel()
    if v.size == 0 or not np.isfinite(v[0]) or not np.all(v == v[0]):
        return None
    return float(v[0])


MIN_SERIES_MEMBERS = 8
ROW_LANES = 8  # a loop over rows fuses rows of at least two multiples of this many elements


MIN_NEW_LOOP = 1536
"""Elements a value needs before `where` or a row's or a column's value joins a loop.
Each such loop is a function of its own to compile, which the spec's short steps never
repay; its values have at most 1,024 elements, a minibatch step of 2 x 32 has 1,792
and more (the compile and run times: bench/RESULTS.md, run 13)."""


def vector_rows(width: int) -> bool:
    """Whether a loop over rows of `width` elements runs as fast as a loop over all of
    them.  LLVM vectorises a row's loop 8 lanes at a time, 2 vectors interleaved, and
    runs what is left one element at a time: rows of 8, 10 or 20 (a softmax over 10
    positions) ran slower than the broadcast written out and one flat loop; rows of 16,
    24, 32 or 64 as fast as a flat loop (bench/RESULTS.md, run 13)."""
    return width >= 2 * ROW_LANES and width % ROW_LANES == 0


def fuse(c: Circuit, has_hi: Sequence[bool], degree: int = 0) -> Fusion:
    """Groups of same-size elementwise equations: maximal runs, split into connected
    chains of two or more.  Sources, scalar broadcasts and scalars computed from
    sources between members do not break a run; any other equation does, so nothing
    outside a run reads a member before the run ends.  Series values join only at a
    degree 1..MAX_DEGREE (their higher orders are unrolled), and only in chains of at
    least MIN_SERIES_MEMBERS equations: a series loop is slow to compile, which only
    long chains (Adam's update, 14 equations) repay in run time (the cold compile
    times of each choice are in bench/RESULTS.md).

    Where no value has higher orders, broadcasts along rows or columns (``stride``)
    do not break a run either, as long as the run's broadcasts share one stride: a
    softmax's or a norm's elementwise work is then one loop over the rows instead of
    a kernel call and a pass over memory per equation."""
    users = c.users()
    outputs = set(c.outputs.values())
    if not 0 <= degree <= MAX_DEGREE:
        degree = 0
    rows_ok = not any(has_hi)

    # each equation's strides of the broadcasts it can read as a row's or a column's value
    widths = [
        {w for j in node.inputs if vector_rows(w := stride(c, j)[1])}
        if rows_ok and node.size >= MIN_NEW_LOOP else set()
        for _, node in c
    ]

    def chains(series_ok) -> list[list[int]]:
        def fusible(i: int, node: Node) -> bool:
            return (
                opdef(node.op).code.scalar is not None
                and node.size > 1
                and (not has_hi[i] or (_fused_rule(node.op) is not None and series_ok(i)))
                and all(
                    c.nodes[j].size == node.size or (_scalar_broadcast(c, j) and not has_hi[j])
                    for j in node.inputs
                )
                and len(widths[i]) <= 1
                and (node.op is not Op.WHERE or node.size >= MIN_NEW_LOOP)
            )

        runs: list[list[int]] = []
        run: list[int] = []
        width = 0  # the stride of the run's broadcasts (0: none yet)
        for i, node in c:
            if fusible(i, node):
                w = max(widths[i], default=0)
                if run and (c.nodes[run[-1]].size != node.size or (width and w and w != width)):
                    runs.append(run)
                    run, width = [], 0
                run.append(i)
                width = width or w
            elif node.op in (Op.INPUT, Op.CONST) or (
                (_scalar_broadcast(c, i) or _scalar_of_sources(c, i)) and not has_hi[i]
            ) or (rows_ok and stride(c, i)[1]):
                continue
            elif run:
                runs.append(run)
                run, width = [], 0
        if run:
            runs.append(run)
        # one equation reading a row's or a column's value is a loop too: the
        # broadcast is then not written out
        return [m for run in runs for m in _components(c, run)
                if len(m) >= 2 or any(widths[i] for i in m)]  # fmt: skip

    found = chains(lambda i: degree > 0)
    while True:  # series values of short chains break runs once excluded: repeat
        long_series = {m for ms in found if len(ms) >= MIN_SERIES_MEMBERS for m in ms if has_hi[m]}
        if not any(has_hi[m] and m not in long_series for ms in found for m in ms):
            break
        found = chains(lambda i, ok=frozenset(long_series): i in ok)

    groups: list[Group] = []
    group_of: dict[int, Group] = {}
    for members in found:
        inside = set(members)
        outs = [m for m in members if m in outputs or any(u not in inside for u in users[m])]
        series = any(has_hi[m] for m in members)
        need: set[int] = set()
        for m in members if series else ():
            node = c.nodes[m]
            ops, own = _needs0(node.op, [has_hi[j] for j in node.inputs])
            need.update(node.inputs[q] for q in ops if node.inputs[q] in inside)
            if own:
                need.add(m)
        width = max((w for m in members for w in widths[m]), default=0)
        g = Group(members, outs, sorted(need - set(outs)), series, width)
        groups.append(g)
        group_of.update({m: g for m in members})
    fusion = Fusion(groups, group_of, set(), has_hi, degree)
    fusion.absorbed = {
        j
        for j, node in c
        if node.op is Op.BROADCAST
        and j not in outputs
        and users[j]
        and all(u in group_of and fusion.through(c, j, group_of[u]) for u in users[j])
    }
    return fusion


def _components(c: Circuit, run: list[int]) -> list[list[int]]:
    """The run split into chains that share no value: one loop each, so a loop's
    streams stay few enough for LLVM to vectorise it (Adam's updates of equal-size
    parameters form one run, which as one loop of 28 streams ran slower)."""
    root = {m: m for m in run}

    def find(m: int) -> int:
        while root[m] != m:
            m = root[m]
        return m

    for m in run:
        for j in c.nodes[m].inputs:
            if j in root:
                root[find(j)] = find(m)
    parts: dict[int, list[int]] = {}
    for m in run:
        parts.setdefault(find(m), []).append(m)
    return list(parts.values())


@dataclass
class FusedCall:
    """What emit needs to call a group's generated loop: its source, the arrays it
    takes and the offsets (vectors, scalars, then for a loop over rows their width and
    the rows' or columns' values, then outputs) for the int table;
    for a series group also the hi arrays and hi offsets (operands, then outputs)."""

    body: str  # the function without its name line, the key for sharing one function
    arrays: list[str]
    offsets: list[int]
    hi_arrays: list[str] = field(default_factory=list)
    hi_offsets: list[int] = field(default_factory=list)
    checks: list[int] = field(default_factory=list)  # outputs it checks (see fused_call)


def fused_call(
    c: Circuit,
    g: Group,
    fusion: Fusion,
    slot: Callable[[int], tuple[str, int]],
    hslot: Callable[[int], tuple[str, int]] | None = None,
    check: Callable[[int], bool] = lambda j: False,
) -> FusedCall:
    """Source of one group's loops.  slot(j) / hslot(j) give the (array, offset) of
    node j's order 0 / higher orders; check(o): output o must be checked for
    infinities and NaNs (the state): its higher orders in a series group (see
    _hi_loop), its values in a real one, while they are still in cache (the function
    returns 0.0, or NaN if one is not finite).  An output written where an operand is
    read (a state, or in series mode its higher orders, updated in place,
    ``compiler/in_place.py``) is that operand's view, so element i is read before it is
    written and LLVM sees no overlap to check."""
    local = {m: f"e{k}" for k, m in enumerate(g.members)}
    written = g.outputs + g.needs0  # order-0 values the first loop stores
    vec: dict[int, str] = {}
    sca: dict[int, str] = {}
    strided: dict[tuple[int, str], str] = {}  # (source, "row" / "col") -> its view
    order0: dict[int, str] = {}  # node -> its order-0 expression at element i
    lines: list[str] = []
    for m in g.members:
        args = []
        for j, src in zip(c.nodes[m].inputs, fusion.reads(c, m), strict=True):
            if j in local:
                args.append(local[j])
                continue
            if uniform_const(c, j) is not None:
                # read from the constant table, not printed: a loop's code then does not
                # depend on a model's sizes (1 / n_embd), and one compiled loop serves all
                sca.setdefault(j, f"s{len(sca)}")
                args.append(sca[j])
            elif src != j and c.nodes[src].size > 1:  # a row's or a column's value
                kind = stride(c, j)[0]
                strided.setdefault((src, kind), f"u{len(strided)}")
                args.append(f"{strided[src, kind]}[{kind}]")
            elif src != j:  # a scalar broadcast: its source, once (what liveness assumes)
                sca.setdefault(src, f"s{len(sca)}")
                args.append(sca[src])
            else:
                vec.setdefault(j, f"v{len(vec)}")
                args.append(f"{vec[j]}[i]")
            order0[j] = args[-1]
        lines.append(f"{local[m]} = {opdef(c.nodes[m].op).code.scalar_expr(args, c.nodes[m])}")
    for k, o in enumerate(written):
        lines.append(f"o{k}[i] = {local[o]}")
        order0[o] = f"o{k}[i]"

    arrays: list[str] = []
    offsets: list[int] = []
    head: list[str] = []
    views: list[str] = []  # the lines of head that name n elements (a checked loop's chunks)

    def operand(name: str, j: int, fmt: str) -> None:
        arr, off = slot(j)
        if arr not in arrays and arr != "tab":  # the int table is always a parameter
            arrays.append(arr)
        offsets.append(off)
        head.append(fmt.format(name=name, arr=arr, k=len(offsets) - 1))

    for j, name in vec.items():
        operand(name, j, "{name} = {arr}[t[{k}] :][:n]")
        views.append(head[-1])
    for j, name in sca.items():
        operand(name, j, "{name} = {arr}[t[{k}]]")
    if strided:  # the rows' width: like n, read from the table
        offsets.append(g.width)
        head.append(f"w = t[{len(offsets) - 1}]")
    for (j, kind), name in strided.items():
        size = "n // w" if kind == "row" else "w"  # a row's values, or a column's
        operand(name, j, "{name} = {arr}[t[{k}] :][:" + size + "]")
    read_at = {slot(j): name for j, name in vec.items()}
    for k, o in enumerate(written):
        if slot(o) in read_at:
            head.append(f"o{k} = {read_at[slot(o)]}")
        else:
            operand(f"o{k}", o, "{name} = {arr}[t[{k}] :][:n]")
        views.append(head[-1])
    if strided:  # a loop over rows of w elements
        loop = ["for row in range(n // w):", "    for col in range(w):",
                "        i = row * w + col"]  # fmt: skip
        lines = ["    " + line for line in lines]
    else:
        loop = ["for i in range(n):"]
    prologue = [f"n = code[r, {N}]", f"t = tab[code[r, {E0}] :]"]
    body = [*prologue, *head, *loop, *("    " + line for line in lines)]
    call = FusedCall("", arrays, offsets)
    if g.series:
        if hslot is None or fusion.degree < 1:
            raise ValueError("a series group needs hi slots and a degree")
        body += _hi_loop(c, g, fusion, order0, hslot, call, check)
    else:
        call.checks = [o for o in g.outputs if check(o)]
        finite = " and ".join(f"k.all_finite(o{written.index(o)})" for o in call.checks)
        if call.checks and not strided:  # the loop in chunks, each checked while in L1
            body = [*prologue, *_checked_chunks(head, views, lines, finite)]
        elif call.checks:
            body.append(f"return 0.0 if {finite} else math.nan")
    call.body = "\n".join(body)
    return call


CHUNK = 1024  # elements of a checked loop's chunk: its outputs still in L1 when checked


def _checked_chunks(head: list[str], views: list[str], lines: list[str], finite: str) -> list[str]:
    """A loop whose outputs must be finite (Adam's update: a step fails where the state
    stops being finite), as chunks of CHUNK elements, each chunk's outputs checked right
    after it.  Checking once after the whole loop read the outputs back from the outer
    caches when they outgrow L2 (a 4 x 128 model's state: bench/RESULTS.md, run 15).
    Each chunk is the whole loop over views of its elements, the form LLVM vectorises
    (indexing the whole arrays from c0 it did not): the same values, in the same order.
    `views` are the lines of `head` that name n elements; the rest are scalars.  `finite`:
    the check of a chunk's outputs (their views), one expression."""
    inside = [ln.replace(" :][:n]", " + c0 :][:m]") for ln in views]
    outside = [ln for ln in head if ln not in views]
    return [
        *outside,
        "finite = True",
        f"for c0 in range(0, n, {CHUNK}):",
        f"    m = min({CHUNK}, n - c0)",
        *("    " + ln for ln in inside),
        "    for i in range(m):",
        *("        " + line for line in lines),
        f"    finite = finite and {finite}",
        "return 0.0 if finite else math.nan",
    ]


def _hi_loop(
    c: Circuit,
    g: Group,
    fusion: Fusion,
    order0: dict[int, str],
    hslot: Callable[[int], tuple[str, int]],
    call: FusedCall,
    check: Callable[[int], bool],
) -> list[str]:
    """The loop over directions and elements computing the group's orders 1..K; each
    hi array is an argument of its own (a view made by the caller).

    For the outputs o with check(o), the function returns the sum of v - v over
    every coefficient part v it stores: 0.0 if all are finite, else NaN.  A series
    step must fail at the step where its state stops being finite; checking while
    the values are in registers replaces a pass over the whole new state (B x K x
    the state size complex values), which is slower.

    The size n stays a run-time value, so one function serves every size.  As a
    literal, LLVM sees that one value's K rows do not overlap and vectorises the loop
    faster, but each size is then a function of its own, and the cold compile goes
    past its budget (bench/RESULTS.md)."""
    K = fusion.degree
    w = Writer()
    hi: dict[int, Hi] = {}
    zero: dict[int, str] = {}
    rows: list[str] = []
    streamed: dict[tuple[str, int], str] = {}  # hi slot -> its view in the loop

    def stream(j: int) -> str:
        arr, off = hslot(j)
        if (arr, off) in streamed:  # an output written where an operand is read: its view
            return streamed[arr, off]
        call.hi_arrays.append(arr)
        call.hi_offsets.append(off)
        name = f"H{len(call.hi_offsets) - 1}"
        rows.append(f"    {name}b = {name}[span * b :][:span]")
        streamed[arr, off] = f"{name}b"
        return f"{name}b"

    def order0_of(j: int) -> str:
        if j not in zero:
            zero[j] = w.let(order0[j])
        return zero[j]

    def hi_of(j: int) -> Hi:
        if j not in hi:
            if not fusion.has_hi[j]:
                hi[j] = None
            else:
                row = stream(j)
                hi[j] = [
                    w.pair(f"{row}[2 * i + {2 * k} * n]", f"{row}[2 * i + 1 + {2 * k} * n]")
                    for k in range(K)
                ]
        return hi[j]

    for m in g.members:
        node = c.nodes[m]
        h = [hi_of(j) for j in node.inputs]
        if not fusion.has_hi[m] or all(x is None for x in h):
            hi[m] = None  # as unfused: a value whose higher orders nobody needs has none
            continue
        ops, own = _needs0(node.op, [x is not None for x in h])
        x0 = [order0_of(j) if q in ops else "" for q, j in enumerate(node.inputs)]
        hi[m] = _fused_rule(node.op)(w, x0, h, order0_of(m) if own else "", node, K)
    stores = []
    checked: list[str] = []
    for o in g.outputs:
        if not fusion.has_hi[o]:
            continue
        row = stream(o)
        z = hi[o] or [("0.0", "0.0")] * K
        for k in range(K):
            stores.append(f"{row}[2 * i + {2 * k} * n] = {z[k][0]}")
            stores.append(f"{row}[2 * i + 1 + {2 * k} * n] = {z[k][1]}")
        if check(o):
            call.checks.append(o)
            checked += [part for pair in z for part in pair]
    if checked:  # a balanced sum per element: only one addition per element is serial
        stores.append("nf += " + _balanced_sum([f"({v} - {v})" for v in checked]))
    return [
        f"span = {2 * K} * n  # floats of one direction's orders of one value",
        *(["nf = 0.0  # 0.0, or NaN once a checked value is not finite"] if checked else []),
        "for b in range(B):",
        *rows,
        "    for i in range(n):",
        *("        " + line for line in w.lines + stores),
        *(["return nf"] if checked else []),
    ]


def _balanced_sum(terms: list[str]) -> str:
    """terms summed as a balanced tree (a left-to-right sum is one long serial chain)."""
    while len(terms) > 1:
        pairs = [f"({a} + {b})" for a, b in zip(terms[0::2], terms[1::2], strict=False)]
        terms = pairs + ([terms[-1]] if len(terms) % 2 else [])
    return terms[0]


def loop_args(call: FusedCall) -> str:
    """The parameters of a fused loop's function: for a series group, the arrays X<q>
    holding its hi operands and outputs (``loop_views`` makes them views H<q>)."""
    hi = "".join(f", X{q}" for q in range(len(call.hi_offsets)))
    return f"{', '.join(call.arrays)}, code, r, tab" + (f", B, K{hi}" if hi else "")


def loop_views(call: FusedCall) -> str:
    """The first lines of a series group's loop: its hi operands and outputs as views of
    the arrays it is given.  Made here, once per loop, and not at each call: a view's
    code inlined at every call made most of a step function's compile time."""
    return "".join(f"H{q} = k.hblock(X{q}, code, r, tab, {q}, B, K)\n"
                   for q in range(len(call.hi_offsets)))  # fmt: skip


def describe(c: Circuit, g: Group) -> list[str]:
    """Comment lines naming the fused equations, for the generated source."""
    return [f"# {c.format_node(m)}" for m in g.members]
