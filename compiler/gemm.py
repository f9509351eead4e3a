"""Matrix products on register tiles, real and complex, for the matrix kernels.

A loop over a result row (the form LLVM vectorises by itself) loads and stores
the row once per few terms of the sum.  A tile of 4 rows x 32 doubles kept in
registers for the whole sum does four vector loads of the right operand and four
broadcasts per 128 multiply-adds, about twice the rate (bench/RESULTS.md); a tile
16 doubles wide spends the same four broadcasts on half as many (run 11 there).  LLVM
does not form such tiles from scalar or tuple code (its SLP vectoriser leaves
them scalar), so the tile is written here as LLVM vector IR.  The vectors are
generic: LLVM lowers them to whatever the CPU has (AVX-512 or AVX2).

Every operand is a flat float64 array (a complex array's ``.view(np.float64)``,
real and imaginary parts interleaved), so complex series blocks are used where
they lie, without packing.  Three kinds of product, by what the left operand's
entries are:

- ``REAL``: real entries, broadcast to every lane: x_0 times an interleaved
  complex block, or a plain real product;
- ``PAIR``: complex entries (re, im), broadcast as pairs, times a real block
  whose entries are doubled (y, y): complex times real;
- ``COMPLEX``: complex entries times an interleaved complex block, summed over
  ``nseg`` segments whose operands lie at fixed strides apart (the Cauchy terms
  x_t y_{m-t}, t = 1..m-1, of one order in one call).

Multiplies and adds stay separate instructions, and every result element is
summed over segments and the inner index in order, the same in every tile: a
product does not depend on where its tile falls.  ``REAL_FMA`` is ``REAL`` with
each term added by a fused multiply-add (one rounding per term, not two: other
bits; a core with two FMA ports does twice the terms per cycle): the
metagradient's reverse steps use it, whose bits no test pins.  A row
whose length is not a multiple of LANES ends in a masked vector.
"""

from __future__ import annotations

from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.core.extending import intrinsic

LANES = 8  # doubles per vector
ROWS = 4  # rows per tile
REAL, PAIR, COMPLEX, REAL_FMA = 0, 1, 2, 4
_I64 = ir.IntType(64)
_I32 = ir.IntType(32)
_VEC = ir.VectorType(ir.DoubleType(), LANES)
_MASK = ir.VectorType(ir.IntType(1), LANES)


def _const(n: int):
    return ir.Constant(_I64, n)


class _TileCode:
    """LLVM IR of one tile: `rows` rows of `vectors` vectors (masked: one vector whose
    lanes from `rem` on are neither read nor written)."""

    def __init__(self, builder, rows: int, vectors: int, masked: bool, rem):
        self.b, self.rows, self.vectors, self.masked = builder, rows, vectors, masked
        self.undef = ir.Constant(_VEC, ir.Undefined)
        self.zero = ir.Constant(_VEC, [0.0] * LANES)
        if masked:
            lane = ir.Constant(ir.VectorType(_I64, LANES), list(range(LANES)))
            rems = self.splat([rem], [0] * LANES, ir.VectorType(_I64, LANES))
            self.mask = builder.icmp_unsigned("<", lane, rems)
            ptr = _VEC.as_pointer()
            self.mload = self.intrinsic("load", ir.FunctionType(_VEC, [ptr, _I32, _MASK, _VEC]))
            void = ir.VoidType()
            self.mstore = self.intrinsic("store", ir.FunctionType(void, [_VEC, ptr, _I32, _MASK]))

    def intrinsic(self, name, fnty):
        name = f"llvm.masked.{name}.v{LANES}f64.p0"
        return cgutils.get_or_insert_function(self.b.module, fnty, name)

    def splat(self, parts, pattern, ty=_VEC):
        """A vector whose lane n holds parts[pattern[n]]."""
        v = undef = ir.Constant(ty, ir.Undefined)
        for n, x in enumerate(parts):
            v = self.b.insert_element(v, x, _const(n))
        return self.b.shuffle_vector(v, undef, ir.Constant(ir.VectorType(_I32, LANES), pattern))

    def at(self, ptr, off):
        return self.b.bitcast(self.b.gep(ptr, [off]), _VEC.as_pointer())

    def load(self, ptr, off):
        if self.masked:
            return self.b.call(
                self.mload, [self.at(ptr, off), ir.Constant(_I32, 8), self.mask, self.zero]
            )
        return self.b.load(self.at(ptr, off), align=8)

    def store(self, value, ptr, off):
        if self.masked:
            self.b.call(self.mstore, [value, self.at(ptr, off), ir.Constant(_I32, 8), self.mask])
        else:
            self.b.store(value, self.at(ptr, off), align=8)

    def emit(self, kind, cp, c0, ldc, ap, a0, lda, astep, bp, b0, ldb, kd, nseg, aseg, bseg):
        """REAL and REAL_FMA store the sum (it is a result's first term); PAIR and COMPLEX
        add to C.  A's entries step by `astep` along the sum for REAL and REAL_FMA (a
        value), by 2 otherwise."""
        b, rows, vectors = self.b, self.rows, self.vectors
        fused = kind == REAL_FMA
        kind = REAL if fused else kind
        if fused:
            fma = cgutils.get_or_insert_function(
                b.module, ir.FunctionType(_VEC, [_VEC, _VEC, _VEC]), f"llvm.fma.v{LANES}f64")
        step = astep if kind == REAL else _const(2)
        crow = [b.add(c0, b.mul(ldc, _const(i))) for i in range(rows)]
        cols = [_const(LANES * v) for v in range(vectors)]
        # accumulators as stack slots: LLVM's mem2reg keeps them in registers
        acc = [[cgutils.alloca_once(b, _VEC) for _ in cols] for _ in range(rows)]
        for i in range(rows):
            for v, col in enumerate(cols):
                start = self.zero if kind == REAL else self.load(cp, b.add(crow[i], col))
                b.store(start, acc[i][v])
        swap = ir.Constant(ir.VectorType(_I32, LANES), [n ^ 1 for n in range(LANES)])
        sign = ir.Constant(_VEC, [-1.0 if n % 2 == 0 else 1.0 for n in range(LANES)])
        with cgutils.for_range(b, nseg) as seg:
            sa = b.add(a0, b.mul(seg.index, aseg))
            sb = b.add(b0, b.mul(seg.index, bseg))
            arow = [b.add(sa, b.mul(lda, _const(i))) for i in range(rows)]
            with cgutils.for_range(b, kd) as loop:
                q = loop.index
                brow = b.add(sb, b.mul(q, ldb))
                bv = [self.load(bp, b.add(brow, col)) for col in cols]
                if kind == COMPLEX:  # i y: (re, im) -> (-im, re)
                    bi = [b.fmul(b.shuffle_vector(x, self.undef, swap), sign) for x in bv]
                for i in range(rows):
                    aq = b.add(arow[i], b.mul(q, step))
                    re = b.load(b.gep(ap, [aq]))
                    if kind == REAL:
                        terms = [(self.splat([re], [0] * LANES), bv)]
                    else:
                        im = b.load(b.gep(ap, [b.add(aq, _const(1))]))
                        if kind == PAIR:
                            terms = [(self.splat([re, im], [n % 2 for n in range(LANES)]), bv)]
                        else:
                            terms = [(self.splat([re], [0] * LANES), bv)]
                            terms.append((self.splat([im], [0] * LANES), bi))
                    for s, vs in terms:
                        for v in range(vectors):
                            if fused:
                                total = b.call(fma, [s, vs[v], b.load(acc[i][v])])
                            else:
                                total = b.fadd(b.load(acc[i][v]), b.fmul(s, vs[v]))
                            b.store(total, acc[i][v])
        for i in range(rows):
            for v, col in enumerate(cols):
                self.store(b.load(acc[i][v]), cp, b.add(crow[i], col))


def _tile(rows: int, vectors: int, masked: bool):
    """An intrinsic tile(kind, C, c0, ldc, A, a0, lda, astep, Bm, b0, ldb, kd, nseg, aseg,
    bseg, rem): C's rows i < rows, doubles [0, vectors * LANES) (masked: [0, rem)) from
    c0 (row stride ldc) get the sum over segments s < nseg and q < kd of A[a0 + s aseg +
    i lda + q step] (step = astep for REAL; a complex pair for PAIR and COMPLEX, step 2)
    times row b0 + s bseg + q ldb of Bm.  Raw pointer arithmetic: the caller checks
    bounds."""

    @intrinsic
    def tile(typingctx, kind, c, c0, ldc, a, a0, lda, astep, b, b0, ldb, kd, nseg, aseg, bseg,
             rem):  # fmt: skip
        arrays_ok = all(
            isinstance(t, types.Array) and (t.ndim, t.layout, t.dtype) == (1, "C", types.float64)
            for t in (c, a, b)
        )
        ints = (kind, c0, ldc, a0, lda, astep, b0, ldb, kd, nseg, aseg, bseg, rem)
        if not arrays_ok or not all(t == types.int64 for t in ints):
            return None
        sig = types.void(kind, c, c0, ldc, a, a0, lda, astep, b, b0, ldb, kd, nseg, aseg, bseg,
                         rem)  # fmt: skip

        def codegen(context, builder, sig, args):
            kind_, c_arr, c0, ldc, a_arr, a0, lda, astep, b_arr, b0, ldb, kd, nseg, aseg = args[:14]
            bseg, rem = args[14:]
            cp, ap, bp = (
                context.make_array(sig.args[n])(context, builder, v).data
                for n, v in ((1, c_arr), (4, a_arr), (8, b_arr))
            )
            code = _TileCode(builder, rows, vectors, masked, rem)
            for k in (REAL, PAIR, COMPLEX, REAL_FMA):
                with builder.if_then(builder.icmp_signed("==", kind_, _const(k))):
                    code.emit(k, cp, c0, ldc, ap, a0, lda, astep, bp, b0, ldb, kd, nseg, aseg,
                              bseg)  # fmt: skip
            return context.get_dummy_value()

        return sig, codegen

    return tile


T44, T42, T41, T40, T14, T12, T11, T10 = (
    _tile(rows, max(vectors, 1), vectors == 0) for rows in (ROWS, 1) for vectors in (4, 2, 1, 0)
)  # vectors 0: one masked vector


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _tile_at(kind, rows, width, C, c, ldc, A, a, lda, astep, Bm, b, ldb, kd, nseg, aseg,
             bseg):  # fmt: skip
    """One tile of `rows` rows and `width` doubles (32, 16, 8 or fewer: masked)."""
    if rows == ROWS:
        if width == 4 * LANES:
            T44(kind, C, c, ldc, A, a, lda, astep, Bm, b, ldb, kd, nseg, aseg, bseg, width)
        elif width == 2 * LANES:
            T42(kind, C, c, ldc, A, a, lda, astep, Bm, b, ldb, kd, nseg, aseg, bseg, width)
        elif width == LANES:
            T41(kind, C, c, ldc, A, a, lda, astep, Bm, b, ldb, kd, nseg, aseg, bseg, width)
        else:
            T40(kind, C, c, ldc, A, a, lda, astep, Bm, b, ldb, kd, nseg, aseg, bseg, width)
    elif width == 4 * LANES:
        T14(kind, C, c, ldc, A, a, lda, astep, Bm, b, ldb, kd, nseg, aseg, bseg, width)
    elif width == 2 * LANES:
        T12(kind, C, c, ldc, A, a, lda, astep, Bm, b, ldb, kd, nseg, aseg, bseg, width)
    elif width == LANES:
        T11(kind, C, c, ldc, A, a, lda, astep, Bm, b, ldb, kd, nseg, aseg, bseg, width)
    else:
        T10(kind, C, c, ldc, A, a, lda, astep, Bm, b, ldb, kd, nseg, aseg, bseg, width)


@njit(cache=True, nogil=True, error_model="numpy")
def _span(first, nseg, stride, extent):
    """[lowest, highest) index touched by nseg blocks of `extent` doubles, `stride` apart."""
    last = first + (nseg - 1) * stride
    return min(first, last), max(first, last) + extent


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _check(kind, C, c0, ldc, A, a0, lda, Bm, b0, ldb, m, n, kd, nseg, aseg, bseg, astep,
           cmore, amore, bmore):  # fmt: skip
    """The blocks lie inside their arrays (with cmore, amore, bmore more doubles past
    them: the other products of a batch); returns A's entry step."""
    if kind not in (REAL, PAIR, COMPLEX, REAL_FMA) or kd < 0 or nseg < 1 or (
            kind in (PAIR, COMPLEX) and n % 2):
        raise ValueError("gemm: bad kind, inner size, segment count or odd complex width")
    if min(ldc, lda, ldb, astep, cmore, amore, bmore) < 0:  # bounds assume forward steps
        raise ValueError("gemm: a negative row stride, entry step or batch step")
    entry = 1 if kind in (REAL, REAL_FMA) else 2  # doubles of one entry of A
    step = astep if entry == 1 else entry
    lo, hi = _span(a0, nseg, aseg, (m - 1) * lda + max(kd - 1, 0) * step + entry)
    if c0 < 0 or c0 + cmore + (m - 1) * ldc + n > C.size or lo < 0 or hi + amore > A.size:
        raise IndexError("gemm: a block of C or A lies outside its array")
    lo, hi = _span(b0, nseg, bseg, max(kd - 1, 0) * ldb + n)
    if kd > 0 and (lo < 0 or hi + bmore > Bm.size):
        raise IndexError("gemm: a block of Bm lies outside its array")
    return step


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _tiles(kind, C, c0, ldc, A, a0, lda, Bm, b0, ldb, m, n, kd, nseg, aseg, bseg, step):
    i = 0
    while i < m:
        rows = ROWS if i + ROWS <= m else 1
        j = 0
        while j < n:
            wide = 4 if n - j >= 4 * LANES else 2 if n - j >= 2 * LANES else 1
            width = min(wide * LANES, n - j)
            _tile_at(
                kind, rows, width, C, c0 + i * ldc + j, ldc, A, a0 + i * lda, lda, step, Bm,
                b0 + j, ldb, kd, nseg, aseg, bseg,
            )  # fmt: skip
            j += width
        i += rows


@njit(cache=True, nogil=True, error_model="numpy")
def gemm(kind, C, c0, ldc, A, a0, lda, Bm, b0, ldb, m, n, kd, nseg=1, aseg=0, bseg=0, astep=1):
    """Rows i < m, doubles j < n of C from c0 (row stride ldc): for REAL and REAL_FMA set
    to, for PAIR and COMPLEX increased by, sum_{s < nseg, q < kd} A(s, i, q) * Bm[b0 +
    s*bseg + q*ldb + j], with A(s, i, q) the entry at a0 + s*aseg + i*lda + q*step (step
    `astep` for REAL and REAL_FMA: lda = 1 and astep = m read A where it lies transposed;
    2 for a complex pair).  For PAIR and COMPLEX, n is even (whole pairs)."""
    if m <= 0 or n <= 0:
        return
    step = _check(kind, C, c0, ldc, A, a0, lda, Bm, b0, ldb, m, n, kd, nseg, aseg, bseg, astep,
                  0, 0, 0)  # fmt: skip
    _tiles(kind, C, c0, ldc, A, a0, lda, Bm, b0, ldb, m, n, kd, nseg, aseg, bseg, step)


@njit(cache=True, nogil=True, error_model="numpy")
def gemm_batch(kind, C, c0, ldc, A, a0, lda, Bm, b0, ldb, m, n, kd, astep, batches, cb, ab, bb):
    """`batches` products of gemm's (one segment), the p-th with c0, a0, b0 moved by p cb,
    p ab, p bb, the bounds checked once: a call and its checks per product cost as much as
    the tiles of attention's small products."""
    if m <= 0 or n <= 0 or batches <= 0:
        return
    last = batches - 1
    step = _check(kind, C, c0, ldc, A, a0, lda, Bm, b0, ldb, m, n, kd, 1, 0, 0, astep,
                  last * cb, last * ab, last * bb)  # fmt: skip
    for p in range(batches):
        _tiles(kind, C, c0 + p * cb, ldc, A, a0 + p * ab, lda, Bm, b0 + p * bb, ldb, m, n, kd,
               1, 0, 0, step)  # fmt: skip
