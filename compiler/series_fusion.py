"""The higher orders of a fused elementwise chain, computed in one generated loop.

As kernels, Adam's series update makes one pass over memory per equation and
per order pair (B x K x n complex values each), and on microgpt's series step
(K = 3) it was a quarter of the time.  Fused, each element's orders 1..K of
every value in the chain stay in registers: the loop reads the chain's series
operands once and writes only the values read after it.  Degree K is unrolled
into the source, so this is used up to ``MAX_DEGREE``; beyond, code size grows
as K^2 per equation and the kernels run instead.

Each rule below (named by ``compiler/series_rules.py``) computes an op's
higher orders as scalar real and imaginary parts, operation for operation as
the ``h_*`` kernels compute them
(``rmul``, Numba's complex product ``(ac - bd, ad + bc)``, the same summation
order), so fused and unfused code give the same bits;
``test_fused_loops_give_the_same_bits`` checks this for every rule.
"""

from __future__ import annotations

from collections.abc import Callable

from circuitsketch.ir import Node, opdef

MAX_DEGREE = 8

Pair = tuple[str, str]  # real and imaginary part of one coefficient
Hi = list[Pair] | None  # orders 1..K, or None: a value without higher orders


class Writer:
    """Lines of the loop body, with fresh names for each assigned part."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.count = 0

    def let(self, expr: str) -> str:
        name = f"u{self.count}"
        self.count += 1
        self.lines.append(f"{name} = {expr}")
        return name

    def pair(self, re: str, im: str) -> Pair:
        return self.let(re), self.let(im)


def _cmul(a: Pair, b: Pair) -> Pair:
    """Numba's complex product, part by part."""
    return f"({a[0]} * {b[0]} - {a[1]} * {b[1]})", f"({a[0]} * {b[1]} + {a[1]} * {b[0]})"


def _rmul(s: str, a: Pair) -> Pair:
    return f"({s} * {a[0]})", f"({s} * {a[1]})"


def _acc(w: Writer, z: Pair, term: Pair, sign: str = "+") -> Pair:
    return w.pair(f"{z[0]} {sign} {term[0]}", f"{z[1]} {sign} {term[1]}")


# A rule: (writer, operand order-0 expressions, operand higher orders, own order-0
# expression, node, K) -> the node's higher orders.
Rule = Callable[[Writer, list[str], list[Hi], str, Node, int], Hi]


def add(w: Writer, x0, h, q0, node, K) -> Hi:
    a, b = h
    if a and b:
        return [w.pair(f"{a[k][0]} + {b[k][0]}", f"{a[k][1]} + {b[k][1]}") for k in range(K)]
    return a or b  # h_copy: the same bits


def _neg(w: Writer, a: Hi, K: int) -> Hi:
    return [w.pair(f"-{a[k][0]}", f"-{a[k][1]}") for k in range(K)] if a else None


def sub(w: Writer, x0, h, q0, node, K) -> Hi:
    a, b = h
    if a and b:
        return [w.pair(f"{a[k][0]} - {b[k][0]}", f"{a[k][1]} - {b[k][1]}") for k in range(K)]
    return a if a else _neg(w, b, K)


def mul(w: Writer, x0, h, q0, node, K) -> Hi:
    a, b = h
    if not (a and b):  # h_scale: the other factor's order 0 times each part
        if not (a or b):
            return None
        s, hx = (x0[1], a) if a else (x0[0], b)
        return [w.pair(*_rmul(s, hx[k])) for k in range(K)]
    z: list[Pair] = []
    for k in range(K):  # h_mul: x0 y_k + y0 x_k, then the products of higher orders
        zk = w.pair(
            f"{x0[0]} * {b[k][0]} + {x0[1]} * {a[k][0]}",
            f"{x0[0]} * {b[k][1]} + {x0[1]} * {a[k][1]}",
        )
        for j in range(k):
            zk = _acc(w, zk, _cmul(a[j], b[k - 1 - j]))
        z.append(zk)
    return z


def div(w: Writer, x0, h, q0, node, K) -> Hi:
    a, b = h
    inv = w.let(f"1.0 / {x0[1]}")
    if not b:  # h_div_const
        return [w.pair(f"{a[k][0]} * {inv}", f"{a[k][1]} * {inv}") for k in range(K)] if a else None
    z: list[Pair] = []
    for k in range(K):  # h_div: (x_k - q0 y_k - sum y_j q_{k-j}) / y0
        zk = w.pair(f"-({q0} * {b[k][0]})", f"-({q0} * {b[k][1]})")
        if a:
            zk = _acc(w, zk, a[k])
        for j in range(k):
            zk = _acc(w, zk, _cmul(b[j], z[k - 1 - j]), "-")
        z.append(w.pair(*_rmul(inv, zk)))
    return z


def power(w: Writer, x0, h, q0, node, K) -> Hi:
    (a,) = h
    p = float(node.attrs[0])
    inv = w.let(f"1.0 / {x0[0]}")
    z: list[Pair] = []
    for k in range(K):  # h_pow: m x0 q_m = sum ((p+1) j - m) x_j q_{m-j}
        m = k + 1
        zk = w.pair(*_rmul(w.let(f"{p * m!r} * {q0}"), a[k]))
        for j in range(1, m):
            t = w.pair(*_rmul(repr((p + 1.0) * j - m), a[j - 1]))
            zk = _acc(w, zk, _cmul(t, z[m - j - 1]))
        z.append(w.pair(*_rmul(w.let(f"{1.0 / m!r} * {inv}"), zk)))
    return z


def exp(w: Writer, x0, h, q0, node, K) -> Hi:
    (a,) = h
    z: list[Pair] = []
    for k in range(K):  # h_exp: m q_m = sum j x_j q_{m-j}
        m = k + 1
        zk = w.pair(*_rmul(w.let(f"{float(m)!r} * {q0}"), a[k]))
        for j in range(1, m):
            t = w.pair(*_rmul(repr(float(j)), a[j - 1]))
            zk = _acc(w, zk, _cmul(t, z[m - j - 1]))
        z.append(w.pair(*_rmul(repr(1.0 / m), zk)))
    return z


def log(w: Writer, x0, h, q0, node, K) -> Hi:
    (a,) = h
    inv = w.let(f"1.0 / {x0[0]}")
    z: list[Pair] = []
    for k in range(K):  # h_log: q_m = (x_m - (1/m) sum j q_j x_{m-j}) / x0
        m = k + 1
        zk: Pair = ("0.0", "0.0")
        for j in range(1, m):
            t = w.pair(*_rmul(repr(float(j)), z[j - 1]))
            zk = _acc(w, zk, _cmul(t, a[m - j - 1]))
        s = _rmul(repr(1.0 / m), zk)
        z.append(w.pair(*_rmul(inv, (f"({a[k][0]} - {s[0]})", f"({a[k][1]} - {s[1]})"))))
    return z


def neg(w: Writer, x0, h, q0, node, K) -> Hi:
    return _neg(w, h[0], K)


def ode(w: Writer, x0, h, q0, node, K) -> Hi:
    """h_ode: m q_m = sum_{j=1..m} j x_j p_{m-j}, p = P(q) = c0 + c1 q + c2 q^2, p_m from
    q_0..q_m (for m < K)."""
    (a,) = h
    c0, c1, c2 = (float(v) for v in opdef(node.op).code.params(node, [])[0])
    p0 = w.let(f"({c2!r} * {q0} + {c1!r}) * {q0} + {c0!r}")
    z: list[Pair] = []
    p: list[Pair] = []  # orders 1.. of p
    for k in range(K):
        m = k + 1
        zk = w.pair(*_rmul(w.let(f"{float(m)!r} * {p0}"), a[k]))
        for j in range(1, m):
            t = w.pair(*_rmul(repr(float(j)), a[j - 1]))
            zk = _acc(w, zk, _cmul(t, p[m - j - 1]))
        z.append(w.pair(*_rmul(repr(1.0 / m), zk)))
        if m < K:
            p.append(_ode_p(w, z, q0, c1, c2, m))
    return z


def _ode_p(w: Writer, z: list[Pair], q0: str, c1: float, c2: float, m: int) -> Pair:
    """Order m of P(q) for m >= 1: c1 q_m + c2 (q*q)_m."""
    ym = z[m - 1]
    terms = []
    if c1 != 0.0:
        terms.append(_rmul(repr(c1), ym))
    if c2 != 0.0:
        sq = w.pair(*_rmul(q0, ym))
        for t in range(1, m):
            sq = _acc(w, sq, _cmul(z[t - 1], z[m - t - 1]))
        sq = _acc(w, sq, _rmul(q0, ym))
        terms.append(_rmul(repr(c2), sq))
    if not terms:
        return w.pair("0.0", "0.0")
    if len(terms) == 1:
        return w.pair(*terms[0])
    return w.pair(f"{terms[0][0]} + {terms[1][0]}", f"{terms[0][1]} + {terms[1][1]}")
