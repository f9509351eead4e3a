"""What a benchmark ran on: the sessions' machines differ (AMD and Intel cores, with
different vector units), so every result records the CPU's model and LLVM's target."""

from __future__ import annotations

import os
import platform


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one) and the target LLVM
    compiles for."""
    import llvmlite.binding as ll

    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            name = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{name} (LLVM target {ll.get_host_cpu_name()})"


def describe() -> str:
    """The CPU, its core count and the Python version, for a result's "machine" field."""
    return f"{cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}"
