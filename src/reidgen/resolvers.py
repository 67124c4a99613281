"""OmegaConf resolvers used by reidgen's configs; registered when the entry points are imported."""

from __future__ import annotations

import torch
from omegaconf import OmegaConf


def auto_precision(accelerator: str = "auto") -> str:
    """Mixed precision where it pays for ``accelerator`` ("auto", "cpu" or "gpu"): fp16 on CUDA,
    bf16 on CPUs with native bf16 (AVX512-BF16 or AMX, about twice as fast as fp32 there), fp32
    elsewhere."""
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return "16-mixed"
    if torch.backends.cpu.get_cpu_capability() in ("AVX512", "AMX") and _cpu_has_bf16():
        return "bf16-mixed"
    return "32-true"


def _cpu_has_bf16() -> bool:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            flags = cpuinfo.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def register() -> None:
    OmegaConf.register_new_resolver("reidgen_auto_precision", auto_precision, replace=True)
