"""What every benchmark prints: the machine, the baseline, the figure, the ratio."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def machine() -> str:
    """One line naming the machine: CPU model, cores, memory, Python, OS."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = ""
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        mem = f", {pages / 2**30:.0f} GiB"
    except (ValueError, OSError):
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores{mem}, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}"
    )


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    """Run ``fn`` once; return its result and the wall seconds it took."""
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def report(
    name: str,
    baseline: str,
    base_value: float,
    value: float,
    unit: str,
    higher_is_better: bool = True,
    goal: float | None = None,
) -> None:
    """Print one figure against its baseline, as a ratio, with the machine."""
    ratio = value / base_value if base_value else float("nan")
    verdict = ""
    if goal is not None:
        met = ratio >= goal if higher_is_better else ratio <= goal
        verdict = f" (goal {'>=' if higher_is_better else '<='} {goal}: "
        verdict += "met)" if met else "NOT met)"
    print(f"machine: {machine()}")
    print(f"{name}: {value:,.3f} {unit}")
    print(f"baseline ({baseline}): {base_value:,.3f} {unit}")
    print(f"ratio: {ratio:.3f}{verdict}")
