"""Which precision the agent's networks run in: ``precision=auto | fp32 | bf16``.

``auto`` (the config's default) picks bf16 autocast only where the hardware computes bf16 natively, fp32 elsewhere:

- CPU: bf16 is native with AVX-512 BF16 or AMX tiles (``torch.cpu._is_avx512_bf16_supported()`` /
  ``torch.cpu._is_amx_tile_supported()``), or on an Arm CPU whose oneDNN has bf16
  (``torch.ops.mkldnn._is_mkldnn_bf16_supported()``). ``torch.backends.cpu.get_cpu_capability()`` alone cannot tell:
  it says ``AVX512`` for AVX-512 CPUs with and without BF16 (and ``AVX2`` below that). On an AVX2-only CPU oneDNN
  emulates bf16 and the update ran ~12x slower than fp32 (AMD EPYC family 25, 2 cores, docs/benchmarks.md).
- CUDA: bf16 tensor cores from compute capability 8.0 (Ampere) on.

``bf16`` forced on a CPU that emulates it still runs (the math is the same autocast), but
:func:`emulated_bf16_warning` measures the cost once (a 3x3 convolution of the encoder's shape, fp32 vs bf16) and says
it. :func:`resolve_precision` returns ``(precision, reason)``: the trainer prints both at start and logs them with the
run config (``precision_resolved`` and ``precision_reason``); the benches print them in their JSON line.
"""

from __future__ import annotations

import platform
import time
from typing import Any

import torch

from drq.speed import PRECISIONS

__all__ = ["PRECISIONS", "RESOLVED_PRECISIONS", "check_precision", "check_resolved_precision", "native_bf16",
           "resolve_precision", "emulated_bf16_warning"]

RESOLVED_PRECISIONS = tuple(p for p in PRECISIONS if p != "auto")  # what the networks run in: fp32 | bf16


def check_precision(precision: Any) -> str:
    """``precision`` if it is one of :data:`PRECISIONS`, else ``ValueError`` naming the value and the choices."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    return precision


def check_resolved_precision(precision: Any) -> str:
    """``precision`` if it is one of :data:`RESOLVED_PRECISIONS` (what an agent runs in), else ``ValueError``;
    ``'auto'`` must be resolved first (:func:`resolve_precision`, which ``drq.agents.make_agent`` calls)."""
    if precision not in RESOLVED_PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(RESOLVED_PRECISIONS)} here ('auto' is resolved by "
                         f"drq.speed.precision.resolve_precision, as drq.agents.make_agent does); got {precision!r}")
    return precision


def _cpu_flag(name: str) -> bool:
    query = getattr(torch.cpu, name, None)  # private torch helpers: absent on some builds -> "no"
    try:
        return bool(query()) if query is not None else False
    except Exception:  # noqa: BLE001
        return False


def native_bf16(device: str | torch.device) -> tuple[bool, str]:
    """Whether ``device`` computes bf16 natively, and what that was decided from (a short phrase)."""
    device = torch.device(device)
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        name = torch.cuda.get_device_name(device)
        native = (major, minor) >= (8, 0)
        return native, f"{name}, compute capability {major}.{minor} ({'>=' if native else '<'} 8.0)"
    if device.type != "cpu":
        return False, f"device type {device.type!r} (bf16 only chosen automatically on CPU and CUDA)"
    capability = torch.backends.cpu.get_cpu_capability()
    if _cpu_flag("_is_amx_tile_supported"):
        return True, f"CPU with AMX (torch capability {capability})"
    if _cpu_flag("_is_avx512_bf16_supported"):
        return True, f"CPU with AVX-512 BF16 (torch capability {capability})"
    if platform.machine().lower() in ("aarch64", "arm64") and torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return True, f"Arm CPU with bf16 (torch capability {capability})"
    return False, f"CPU without AVX-512 BF16 or AMX (torch capability {capability})"


def resolve_precision(precision: str, device: str | torch.device) -> tuple[str, str]:
    """``(fp32 | bf16, reason)`` for the configured ``precision`` on ``device``.

    ``auto`` -> ``bf16`` where :func:`native_bf16`, else ``fp32``; ``fp32`` / ``bf16`` are kept as asked (the reason
    then says whether bf16 is native)."""
    check_precision(precision)
    native, why = native_bf16(device)
    if precision == "auto":
        chosen = "bf16" if native else "fp32"
        return chosen, f"auto: {why}: {'native bf16' if native else 'bf16 would be emulated'}"
    if precision == "bf16":
        return "bf16", f"asked for; {why}: {'native' if native else 'EMULATED (slow)'} bf16"
    return "fp32", "asked for"


def measure_bf16_cost(device: str | torch.device = "cpu", batch: int = 16, repeats: int = 3) -> float:
    """Seconds of a bf16-autocast 3x3 convolution (the encoder's 32 -> 32 channels at 39x39) over seconds of the same
    in fp32, best of ``repeats`` each: > 1 means bf16 is slower. ~0.2-1 s on a 2-core CPU."""
    device = torch.device(device)
    x = torch.randn(batch, 32, 39, 39, device=device).contiguous(memory_format=torch.channels_last)
    conv = torch.nn.Conv2d(32, 32, 3).to(device=device, memory_format=torch.channels_last)

    def best(bf16: bool) -> float:
        times = []
        for _ in range(repeats + 1):  # the first call creates the oneDNN primitive: not timed
            start = time.perf_counter()
            with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                conv(x)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - start)
        return min(times[1:])

    return best(True) / best(False)


def emulated_bf16_warning(precision: str, device: str | torch.device) -> str | None:
    """One warning line when ``precision`` (as configured) is ``bf16`` on a device without native bf16, with the
    measured cost (:func:`measure_bf16_cost`); ``None`` otherwise."""
    if precision != "bf16":
        return None
    native, why = native_bf16(device)
    if native:
        return None
    cost = measure_bf16_cost(device)
    return (f"warning: precision=bf16 on a {why}: bf16 is emulated here, a convolution measured {cost:.1f}x the "
            f"time of fp32; precision=auto (or fp32) is faster on this machine")
