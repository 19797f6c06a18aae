"""The CPU kind a benchmark ran on, printed at the top of every result."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch


def cpu_kind() -> str:
    """The CPU model, its bf16 instructions (AVX-512 BF16 / AMX: bf16 autocast; neither: fp32), the vector kernels
    ATen runs, torch's threads and the load average."""
    name = platform.processor() or "unknown CPU"
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    bf16 = "/".join(f for f in ("avx512_bf16", "amx_bf16") if f in flags) or "no bf16 instructions: fp32"
    load = "/".join(f"{x:.2f}" for x in os.getloadavg())
    kernels = torch.backends.cpu.get_cpu_capability()  # what ATen runs: AVX2 under ATEN_CPU_CAPABILITY=avx2
    threads = torch.get_num_threads()
    return f"{name}, {os.cpu_count()} CPUs ({bf16}), {kernels} kernels, torch threads {threads}, load {load}"
