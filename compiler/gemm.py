"""Real matrix products on register tiles, for the series matrix kernel.

A loop over a result row (the form LLVM vectorises by itself) loads and stores
the row once per few terms of the sum and reaches 8-10 G multiply-adds/s here.
A tile of 4 rows x 16 columns kept in registers for the whole sum does one
vector load of the right operand and four broadcasts per 64 multiply-adds, and
reaches 17-21 G (measured on 8x16x96 .. 64x16x96 products).  LLVM does not form
such tiles from scalar or tuple code (its SLP vectoriser leaves them scalar), so
the tile is written here as LLVM vector IR.  The vectors are generic: LLVM
lowers them to whatever the CPU has (with AVX-512 to zmm registers; forced to
AVX2 with NUMBA_CPU_NAME=haswell the same tiles still ran at 22-24 G).
Multiplies and adds stay separate instructions (no fused multiply-add), and
every result element is summed over the inner index in order, the same for
every call: a product does not depend on which tile or which direction of a
batch it falls in.
"""

from __future__ import annotations

from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.core.extending import intrinsic

LANES = 8  # doubles per vector
ROWS = 4  # rows per tile


def _tile(rows: int, vectors: int, accumulate: bool):
    """An intrinsic: C[c0 + i ldc + j] (+)= sum_q A[a0 + i lda + q] Bm[b0 + q ldb + j]
    for i < rows, j < vectors * LANES.  Raw pointer arithmetic: the caller checks bounds."""

    @intrinsic
    def tile(typingctx, c, c0, ldc, a, a0, lda, b, b0, ldb, kd):
        arrays_ok = all(
            isinstance(t, types.Array)
            and t.ndim == 1
            and t.layout == "C"
            and t.dtype == types.float64
            for t in (c, a, b)
        )
        if not arrays_ok or not all(t == types.int64 for t in (c0, ldc, a0, lda, b0, ldb, kd)):
            return None
        sig = types.void(c, c0, ldc, a, a0, lda, b, b0, ldb, kd)

        def codegen(context, builder, sig, args):
            c_arr, c0_, ldc_, a_arr, a0_, lda_, b_arr, b0_, ldb_, kd_ = args
            cp, ap, bp = (
                context.make_array(sig.args[n])(context, builder, v).data
                for n, v in ((0, c_arr), (3, a_arr), (6, b_arr))
            )
            vec = ir.VectorType(ir.DoubleType(), LANES)
            i64 = ir.IntType(64)

            def at(ptr, off):
                return builder.bitcast(builder.gep(ptr, [off]), vec.as_pointer())

            def plus(x, n):
                return builder.add(x, ir.Constant(i64, n))

            crow = [builder.add(c0_, builder.mul(ldc_, ir.Constant(i64, i))) for i in range(rows)]
            arow = [builder.add(a0_, builder.mul(lda_, ir.Constant(i64, i))) for i in range(rows)]
            # accumulators as stack slots: LLVM's mem2reg keeps them in registers
            acc = [[cgutils.alloca_once(builder, vec) for _ in range(vectors)] for _ in range(rows)]
            for i in range(rows):
                for v in range(vectors):
                    start = (
                        builder.load(at(cp, plus(crow[i], LANES * v)), align=8)
                        if accumulate
                        else ir.Constant(vec, [0.0] * LANES)
                    )
                    builder.store(start, acc[i][v])
            splat = ir.Constant(ir.VectorType(ir.IntType(32), LANES), [0] * LANES)
            undef = ir.Constant(vec, ir.Undefined)
            with cgutils.for_range(builder, kd_) as loop:
                q = loop.index
                brow = builder.add(b0_, builder.mul(q, ldb_))
                bv = [builder.load(at(bp, plus(brow, LANES * v)), align=8) for v in range(vectors)]
                for i in range(rows):
                    s = builder.load(builder.gep(ap, [builder.add(arow[i], q)]))
                    s = builder.insert_element(undef, s, ir.Constant(i64, 0))
                    s = builder.shuffle_vector(s, undef, splat)  # s in every lane
                    for v in range(vectors):
                        total = builder.fadd(builder.load(acc[i][v]), builder.fmul(s, bv[v]))
                        builder.store(total, acc[i][v])
            for i in range(rows):
                for v in range(vectors):
                    builder.store(
                        builder.load(acc[i][v]), at(cp, plus(crow[i], LANES * v)), align=8
                    )
            return context.get_dummy_value()

        return sig, codegen

    return tile


TILE_SHAPES = ((ROWS, 2), (ROWS, 1), (1, 2), (1, 1))  # (rows, vectors)
add_4x2, add_4x1, add_1x2, add_1x1 = (_tile(r, v, True) for r, v in TILE_SHAPES)
set_4x2, set_4x1, set_1x2, set_1x1 = (_tile(r, v, False) for r, v in TILE_SHAPES)


@njit(cache=True, nogil=True, error_model="numpy")
def gemm(C, c0, ldc, A, a0, lda, Bm, b0, ldb, m, n, kd, accumulate):
    """C[c0 + i*ldc + j] = (C[...] if accumulate else 0) + sum_{q < kd} A[a0 + i*lda + q]
    * Bm[b0 + q*ldb + j] for i < m, j < n: row-major blocks of flat float64 arrays.
    n must be a multiple of LANES (callers pad their packed blocks)."""
    if m <= 0 or n <= 0:
        return
    if n % LANES != 0 or kd < 0:
        raise ValueError("gemm: the column count must be a positive multiple of LANES")
    if min(c0, a0, b0) < 0 or c0 + (m - 1) * ldc + n > C.size or a0 + (m - 1) * lda + kd > A.size:
        raise IndexError("gemm: a block of C or A lies outside its array")
    if kd > 0 and b0 + (kd - 1) * ldb + n > Bm.size:
        raise IndexError("gemm: a block of Bm lies outside its array")
    i = 0
    while i < m:
        rows = ROWS if i + ROWS <= m else 1
        ci, ai = c0 + i * ldc, a0 + i * lda
        for j in range(0, n, 2 * LANES):
            if j + 2 * LANES <= n:
                if rows == ROWS:
                    if accumulate:
                        add_4x2(C, ci + j, ldc, A, ai, lda, Bm, b0 + j, ldb, kd)
                    else:
                        set_4x2(C, ci + j, ldc, A, ai, lda, Bm, b0 + j, ldb, kd)
                elif accumulate:
                    add_1x2(C, ci + j, ldc, A, ai, lda, Bm, b0 + j, ldb, kd)
                else:
                    set_1x2(C, ci + j, ldc, A, ai, lda, Bm, b0 + j, ldb, kd)
            elif rows == ROWS:
                if accumulate:
                    add_4x1(C, ci + j, ldc, A, ai, lda, Bm, b0 + j, ldb, kd)
                else:
                    set_4x1(C, ci + j, ldc, A, ai, lda, Bm, b0 + j, ldb, kd)
            elif accumulate:
                add_1x1(C, ci + j, ldc, A, ai, lda, Bm, b0 + j, ldb, kd)
            else:
                set_1x1(C, ci + j, ldc, A, ai, lda, Bm, b0 + j, ldb, kd)
        i += rows
