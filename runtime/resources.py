"""Resource guards: what a compile, a query or a metagradient will need, before it allocates.

Each ``*_memory`` function estimates the peak bytes of the large arrays a
job allocates (the series state and its work buffers, the stored chunks,
the directions, a training trajectory); ``require`` compares an estimate
with the memory this process can still get (``available_memory``: the
smallest of the kernel's MemAvailable, the cgroup's limit less its usage,
and the address-space limit) and raises ``ResourceError`` with a one-line
message naming the estimate, the available memory and the options that
drive it.  ``require_disk`` does the same for a sketch's files.  The
estimates are of the dominant arrays only (a few MB of code and small
tables come on top), so a refused job would certainly not have fit.
"""

from __future__ import annotations

import resource
import shutil
from pathlib import Path

__all__ = [
    "ResourceError",
    "available_memory",
    "compile_memory",
    "fmt_bytes",
    "metagrad_memory",
    "program_memory",
    "query_memory",
    "require",
    "require_disk",
]

C16 = 16  # bytes of a complex128
F8 = 8  # bytes of a float64
STEP_BYTES = 600  # a training step's schedule entry, tables and Python objects (bound)
PASS_ORDERS = 48  # as compiler.compiled.PASS_ORDERS: directions x orders per compiled pass


class ResourceError(ValueError):
    """A job that would need more memory or disk than this machine has."""


def fmt_bytes(n: float) -> str:
    """1536 -> '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"  # pragma: no cover


def _read_int(path: str) -> int | None:
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def available_memory() -> int | None:
    """Bytes this process can still allocate (None: unknown on this system)."""
    found = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    for limit, usage in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        (
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "/sys/fs/cgroup/memory/memory.usage_in_bytes",
        ),
    ):
        lim, use = _read_int(limit), _read_int(usage)
        if lim is not None and use is not None and lim < 1 << 60:
            found.append(max(lim - use, 0))
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        try:
            vm = next(
                int(line.split()[1]) * 1024
                for line in Path("/proc/self/status").read_text().splitlines()
                if line.startswith("VmSize:")
            )
        except (OSError, StopIteration, ValueError):
            vm = 0
        found.append(max(soft - vm, 0))
    return min(found) if found else None


def require(needed: int, what: str, hint: str) -> None:
    """ResourceError unless `needed` bytes fit in the available memory.

    `what`: the job and the options that size it ("compile --degree 100000");
    `hint`: what to change.
    """
    avail = available_memory()
    if avail is not None and needed > avail:
        raise ResourceError(
            f"{what} needs about {fmt_bytes(needed)} of memory, and this machine has "
            f"{fmt_bytes(avail)} available: {hint}"
        )


def require_disk(needed: int, where: str | Path, what: str, hint: str) -> None:
    """ResourceError unless `needed` bytes fit on the file system holding `where`."""
    p = Path(where).resolve()
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        free = shutil.disk_usage(p).free
    except OSError:
        return
    if needed > free:
        raise ResourceError(
            f"{what} needs about {fmt_bytes(needed)} on disk, and {str(p)!r} has "
            f"{fmt_bytes(free)} free: {hint}"
        )


# ---------------------------------------------------------------- estimates
def program_memory(steps: int, state_size: int) -> int:
    """Building a training program and its compiled schedule: per-step tables and state."""
    return steps * STEP_BYTES + 4 * state_size * F8


def compile_memory(
    degree: int, chunk_size: int, state_size: int, num_params: int, work_size: int,
    in_place: bool = False,
) -> int:  # fmt: skip
    """One worker's series training of one chunk: the state's orders 1..K once when the
    steps update them in place (``compiler/in_place.py``), else twice (more when a chunk
    runs in several passes), the work buffer of a pass, the stored block twice."""
    k, b = degree, chunk_size
    group = max(1, PASS_ORDERS // k)
    copies = (1 if in_place else 2) + (0 if group >= b else 2)
    series = b * k * state_size * copies
    return C16 * (series + min(b, group) * k * work_size + 2 * b * k * num_params)


def query_memory(
    num_directions: int, num_docs: int, degree: int, chunk_bytes: int, state_size: int,
    tests: int, batch: int,
) -> int:  # fmt: skip
    """Coefficients of `tests` inputs and the estimate: the directions (and the estimator's
    temporaries of their size), one chunk read and unpacked, a batch of output series."""
    m, n, k = num_directions, num_docs, degree
    return (
        3 * C16 * m * n
        + 2 * chunk_bytes
        + C16 * tests * m * (k + 1)
        + 3 * C16 * min(batch, m) * k * state_size
    )


def metagrad_memory(steps: int, state_size: int) -> int:
    """The full-trajectory metagradient: every forward state, kept twice (the trajectory
    and the reverse run's step data)."""
    return 2 * (steps + 1) * state_size * F8 + program_memory(steps, state_size)


def directions_memory(num_directions: int, num_docs: int) -> int:
    return C16 * num_directions * num_docs
