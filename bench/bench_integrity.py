"""What the integrity checks cost on one sketch (docs/integrity.md has the table).

    python bench/bench_integrity.py SKETCH [--doc NAME]

Times, in this process: opening the sketch (sealed manifest, names, sizes),
``verify`` (sha256 of every file), the check a cached query makes of the
files its cache was computed from (with valid stamps: a stat per file;
without: hashing them), a first query (every chunk read and hashed) and a
cached query.  Works on a copy, so the sketch itself is not touched.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from runtime.integrity import STAMPS
from runtime.query import coefficient_cache, deletion_weights, predict
from runtime.store import Sketch


def timed(fn, repeat: int = 5) -> float:
    """Median seconds of `repeat` calls."""
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sketch")
    ap.add_argument("--doc", default="fiona")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sk_dir = Path(tmp) / "sk"
        shutil.copytree(args.sketch, sk_dir, ignore=shutil.ignore_patterns("cache", "metagrad"))
        size = sum(p.stat().st_size for p in sk_dir.rglob("*.npy"))
        sk = Sketch.open(sk_dir)
        names = sorted(sk.manifest["files"])
        w = deletion_weights(sk.docs(), indices="0")[0]
        rows = {
            "open (seal, names, sizes)": timed(lambda: Sketch.open(sk_dir)),
            "verify (sha256 of every file)": timed(lambda: Sketch.open(sk_dir).verify_all(), 3),
            "inputs of a cache, stamps valid": timed(
                lambda: Sketch.open(sk_dir).ensure_verified(names)
            ),
        }

        def unstamped() -> None:
            (sk_dir / STAMPS).unlink(missing_ok=True)
            Sketch.open(sk_dir).ensure_verified(names)

        rows["inputs of a cache, no stamps (hashed)"] = timed(unstamped, 3)

        def first_query() -> None:
            shutil.rmtree(sk_dir / "cache", ignore_errors=True)
            predict(Sketch.open(sk_dir), [args.doc], w)

        predict(Sketch.open(sk_dir), [args.doc], w)  # compiled code loaded once
        rows["query, first (chunks read and hashed)"] = timed(first_query, 3)
        predict(Sketch.open(sk_dir), [args.doc], w)
        rows["query, cached (open + checks + estimate)"] = timed(
            lambda: predict(Sketch.open(sk_dir), [args.doc], w)
        )
        assert coefficient_cache(Sketch.open(sk_dir)).get(args.doc) is not None
    print(
        f"sketch {args.sketch}: M = {sk.num_directions}, N = {sk.num_docs}, K = {sk.degree}, "
        f"{len(names)} files, {size / 2**20:.1f} MiB"
    )
    for what, s in rows.items():
        print(f"  {what:<42} {s * 1e3:9.1f} ms")


if __name__ == "__main__":
    main()
