"""Matrix products on register tiles, real and complex, for the matrix kernels.

A loop over a result row (the form LLVM vectorises by itself) loads and stores
the row once per few terms of the sum and reaches 8-10 G multiply-adds/s here.
A tile of 4 rows x 16 doubles kept in registers for the whole sum does one
vector load of the right operand and four broadcasts per 64 multiply-adds, and
reaches 17-24 G (measured on 8x16x96 .. 64x16x96 real products).  LLVM does not
form such tiles from scalar or tuple code (its SLP vectoriser leaves them
scalar), so the tile is written here as LLVM vector IR.  The vectors are
generic: LLVM lowers them to whatever the CPU has (with AVX-512 to zmm
registers; forced to AVX2 with NUMBA_CPU_NAME=haswell the same tiles still ran
at 22-24 G).

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

Multiplies and adds stay separate instructions (no fused multiply-add), and
every result element is summed over segments and the inner index in order, the
same in every tile: a product does not depend on where its tile falls.  A row
whose length is not a multiple of LANES ends in a masked vector.
"""

from __future__ import annotations

from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.core.extending import intrinsic

LANES = 8  # doubles per vector
ROWS = 4  # rows per tile
REAL, PAIR, COMPLEX = 0, 1, 2
_I64 = ir.IntType(64)
_I32 = ir.IntType(32)
_VEC = ir.VectorType(ir.DoubleType(), LANES)
_MASK = ir.VectorType(ir.IntType(1), LANES)


def _const(n: int):
    return ir.Constant(_I64, n)


def _masked(builder, name: str, fnty):
    return cgutils.get_or_insert_function(builder.module, fnty, f"llvm.masked.{name}.v8f64.p0")


def _tile(kind: int, rows: int, vectors: int, accumulate: bool, masked: bool):
    """An intrinsic adding (or, not accumulate, storing) to C's rows i < rows, doubles
    [0, vectors * LANES) (masked: [0, rem)) from c0 (row stride ldc), the sum over
    segments s < nseg and q < kd of A[a0 + s aseg + i lda + q step] (a complex pair for
    PAIR and COMPLEX, step 2) times row b0 + s bseg + q ldb of Bm.  Raw pointer
    arithmetic: the caller checks bounds."""
    step = 1 if kind == REAL else 2

    @intrinsic
    def tile(typingctx, c, c0, ldc, a, a0, lda, b, b0, ldb, kd, nseg, aseg, bseg, rem):
        arrays_ok = all(
            isinstance(t, types.Array) and (t.ndim, t.layout, t.dtype) == (1, "C", types.float64)
            for t in (c, a, b)
        )
        ints = (c0, ldc, a0, lda, b0, ldb, kd, nseg, aseg, bseg, rem)
        if not arrays_ok or not all(t == types.int64 for t in ints):
            return None
        sig = types.void(c, c0, ldc, a, a0, lda, b, b0, ldb, kd, nseg, aseg, bseg, rem)

        def codegen(context, builder, sig, args):
            c_arr, c0_, ldc_, a_arr, a0_, lda_, b_arr, b0_, ldb_, kd_, nseg_, aseg_, bseg_, rem_ = (
                args
            )
            cp, ap, bp = (
                context.make_array(sig.args[n])(context, builder, v).data
                for n, v in ((0, c_arr), (3, a_arr), (6, b_arr))
            )
            undef = ir.Constant(_VEC, ir.Undefined)
            zero = ir.Constant(_VEC, [0.0] * LANES)
            align = ir.Constant(_I32, 8)
            if masked:
                lane = ir.Constant(ir.VectorType(_I64, LANES), list(range(LANES)))
                rems = builder.insert_element(ir.Constant(lane.type, ir.Undefined), rem_, _const(0))
                rems = builder.shuffle_vector(
                    rems, rems, ir.Constant(ir.VectorType(_I32, LANES), [0] * LANES)
                )
                mask = builder.icmp_unsigned("<", lane, rems)
                mload = _masked(
                    builder, "load", ir.FunctionType(_VEC, [_VEC.as_pointer(), _I32, _MASK, _VEC])
                )
                mstore = _masked(
                    builder,
                    "store",
                    ir.FunctionType(ir.VoidType(), [_VEC, _VEC.as_pointer(), _I32, _MASK]),
                )

            def at(ptr, off):
                return builder.bitcast(builder.gep(ptr, [off]), _VEC.as_pointer())

            def load(ptr, off):
                if masked:
                    return builder.call(mload, [at(ptr, off), align, mask, zero])
                return builder.load(at(ptr, off), align=8)

            def store(value, ptr, off):
                if masked:
                    builder.call(mstore, [value, at(ptr, off), align, mask])
                else:
                    builder.store(value, at(ptr, off), align=8)

            def splat(x, pattern):
                v = builder.insert_element(undef, x[0], _const(0))
                if len(x) > 1:
                    v = builder.insert_element(v, x[1], _const(1))
                return builder.shuffle_vector(
                    v, undef, ir.Constant(ir.VectorType(_I32, LANES), pattern)
                )

            crow = [builder.add(c0_, builder.mul(ldc_, _const(i))) for i in range(rows)]
            # accumulators as stack slots: LLVM's mem2reg keeps them in registers
            acc = [
                [cgutils.alloca_once(builder, _VEC) for _ in range(vectors)] for _ in range(rows)
            ]
            for i in range(rows):
                for v in range(vectors):
                    start = (
                        load(cp, builder.add(crow[i], _const(LANES * v))) if accumulate else zero
                    )
                    builder.store(start, acc[i][v])
            swap = [n ^ 1 for n in range(LANES)]  # (re, im) -> (im, re)
            sign = ir.Constant(_VEC, [-1.0 if n % 2 == 0 else 1.0 for n in range(LANES)])
            with cgutils.for_range(builder, nseg_) as seg:
                sa = builder.add(a0_, builder.mul(seg.index, aseg_))
                sb = builder.add(b0_, builder.mul(seg.index, bseg_))
                arow = [builder.add(sa, builder.mul(lda_, _const(i))) for i in range(rows)]
                with cgutils.for_range(builder, kd_) as loop:
                    q = loop.index
                    brow = builder.add(sb, builder.mul(q, ldb_))
                    bv = [load(bp, builder.add(brow, _const(LANES * v))) for v in range(vectors)]
                    if kind == COMPLEX:  # (re, im) -> (-im, re): i times y
                        bi = [builder.fmul(builder.shuffle_vector(x, undef, ir.Constant(
                            ir.VectorType(_I32, LANES), swap)), sign) for x in bv]  # fmt: skip
                    for i in range(rows):
                        aq = builder.add(arow[i], builder.mul(q, _const(step)))
                        re = builder.load(builder.gep(ap, [aq]))
                        if kind == REAL:
                            parts = [(splat([re], [0] * LANES), bv)]
                        else:
                            im = builder.load(builder.gep(ap, [builder.add(aq, _const(1))]))
                            if kind == PAIR:
                                parts = [(splat([re, im], [n % 2 for n in range(LANES)]), bv)]
                            else:
                                parts = [
                                    (splat([re], [0] * LANES), bv),
                                    (splat([im], [0] * LANES), bi),
                                ]
                        for s, vs in parts:
                            for v in range(vectors):
                                total = builder.fadd(
                                    builder.load(acc[i][v]), builder.fmul(s, vs[v])
                                )
                                builder.store(total, acc[i][v])
            for i in range(rows):
                for v in range(vectors):
                    store(builder.load(acc[i][v]), cp, builder.add(crow[i], _const(LANES * v)))
            return context.get_dummy_value()

        return sig, codegen

    return tile


# (kind, rows, vectors) -> tile; vectors 0: one masked vector.  REAL products store
# (they are the first term of a result), PAIR and COMPLEX ones accumulate.
_SHAPES = [(rows, vectors) for rows in (ROWS, 1) for vectors in (2, 1, 0)]
R42, R41, R40, R12, R11, R10 = (_tile(REAL, r, max(v, 1), False, v == 0) for r, v in _SHAPES)
P42, P41, P40, P12, P11, P10 = (_tile(PAIR, r, max(v, 1), True, v == 0) for r, v in _SHAPES)
C42, C41, C40, C12, C11, C10 = (_tile(COMPLEX, r, max(v, 1), True, v == 0) for r, v in _SHAPES)


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _tile_at(kind, rows, width, C, c, ldc, A, a, lda, Bm, b, ldb, kd, nseg, aseg, bseg):
    """One tile of `rows` rows and `width` doubles (16, 8 or fewer: masked)."""
    rem = width
    if kind == REAL:
        if rows == ROWS:
            if width == 2 * LANES:
                R42(C, c, ldc, A, a, lda, Bm, b, ldb, kd, nseg, aseg, bseg, rem)
            elif width == LANES:
                R41(C, c, ldc, A, a, lda, Bm, b, ldb, kd, nseg, aseg, bseg, rem)
            else:
                R40(C, c, ldc, A, a, lda, Bm, b, ldb, kd, nseg, aseg, bseg, rem)
        elif width == 2 * LANES:
            R12(C, c, ldc, A, a, lda, Bm, b, ldb, kd, nseg, aseg, bseg, rem)
        elif width == LANES:
            R11(C, c, ldc, A, a, lda, Bm, b, ldb, kd, nseg, aseg, bseg, rem)
        else:
            R10(C, c, ldc, A, a, lda, Bm, b, ldb, kd, nseg, aseg, bseg, rem)
    elif kind == PAIR:
        if rows == ROWS:
            if width == 2 * LANES:
                P42(C, c, ldc, A, a, lda, Bm, b, ldb, kd, nseg, aseg, bseg, rem)
            elif width == LANES:
                P41(C, c, ldc, A, a, lda, Bm, b, ldb, kd, nseg, aseg, bseg, rem)
            else:
                P40(C, c, ldc, A, a, lda, Bm, b, ldb, kd, nseg, aseg, bseg, rem)
        elif width == 2 * LANES:
            P12(C, c, ldc, A, a, lda, Bm, b, ldb, kd, nseg, aseg, bseg, rem)
        elif width == LANES:
            P11(C, c, ldc, A, a, lda, Bm, b, ldb, kd, nseg, aseg, bseg, rem)
        else:
            P10(C, c, ldc, A, a, lda, Bm, b, ldb, kd, nseg, aseg, bseg, rem)
    elif rows == ROWS:
        if width == 2 * LANES:
            C42(C, c, ldc, A, a, lda, Bm, b, ldb, kd, nseg, aseg, bseg, rem)
        elif width == LANES:
            C41(C, c, ldc, A, a, lda, Bm, b, ldb, kd, nseg, aseg, bseg, rem)
        else:
            C40(C, c, ldc, A, a, lda, Bm, b, ldb, kd, nseg, aseg, bseg, rem)
    elif width == 2 * LANES:
        C12(C, c, ldc, A, a, lda, Bm, b, ldb, kd, nseg, aseg, bseg, rem)
    elif width == LANES:
        C11(C, c, ldc, A, a, lda, Bm, b, ldb, kd, nseg, aseg, bseg, rem)
    else:
        C10(C, c, ldc, A, a, lda, Bm, b, ldb, kd, nseg, aseg, bseg, rem)


@njit(cache=True, nogil=True, error_model="numpy")
def _span(first, nseg, stride, extent):
    """[lowest, highest) index touched by nseg blocks of `extent` doubles, `stride` apart."""
    last = first + (nseg - 1) * stride
    return min(first, last), max(first, last) + extent


@njit(cache=True, nogil=True, error_model="numpy")
def gemm(kind, C, c0, ldc, A, a0, lda, Bm, b0, ldb, m, n, kd, nseg=1, aseg=0, bseg=0):
    """Rows i < m, doubles j < n of C from c0 (row stride ldc): for REAL set to, for
    PAIR and COMPLEX increased by, sum_{s < nseg, q < kd} A(s, i, q) * Bm[b0 + s*bseg +
    q*ldb + j], with A(s, i, q) the entry at a0 + s*aseg + i*lda + q*step (step 1 for
    REAL, 2 for a complex pair).  For PAIR and COMPLEX, n is even (whole pairs)."""
    if m <= 0 or n <= 0:
        return
    if kind not in (REAL, PAIR, COMPLEX) or kd < 0 or nseg < 1 or (kind != REAL and n % 2):
        raise ValueError("gemm: bad kind, inner size, segment count or odd complex width")
    step = 1 if kind == REAL else 2
    lo, hi = _span(a0, nseg, aseg, (m - 1) * lda + max(kd - 1, 0) * step + step)
    if c0 < 0 or c0 + (m - 1) * ldc + n > C.size or lo < 0 or hi > A.size:
        raise IndexError("gemm: a block of C or A lies outside its array")
    lo, hi = _span(b0, nseg, bseg, max(kd - 1, 0) * ldb + n)
    if kd > 0 and (lo < 0 or hi > Bm.size):
        raise IndexError("gemm: a block of Bm lies outside its array")
    i = 0
    while i < m:
        rows = ROWS if i + ROWS <= m else 1
        j = 0
        while j < n:
            width = min(2 * LANES if n - j >= 2 * LANES else LANES, n - j)
            _tile_at(
                kind, rows, width, C, c0 + i * ldc + j, ldc, A, a0 + i * lda, lda, Bm, b0 + j,
                ldb, kd, nseg, aseg, bseg,
            )  # fmt: skip
            j += width
        i += rows
