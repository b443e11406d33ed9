"""What this machine's CPU can do, read from the kernel rather than assumed: the machines this runs
on range from AVX2-only AMD EPYCs to Intel Xeons with AMX."""

from __future__ import annotations

from functools import cache
from pathlib import Path

# Instruction-set flags (x86 `flags`, Arm `Features` in /proc/cpuinfo) that do bf16 matrix products
# natively; without them bf16 is converted to float32 and back around every product.
BF16_MATMUL_FLAGS = {"avx512_bf16", "amx_bf16", "bf16"}


@cache
def cpu_flags() -> frozenset[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: claim nothing
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def bf16_matmul_supported() -> bool:
    return bool(BF16_MATMUL_FLAGS & cpu_flags())
