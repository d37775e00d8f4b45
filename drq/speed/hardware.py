"""What a measurement ran on, as one flat dict: every ``bench/*.py`` JSON line carries it (``"machine": {...}``).

``describe(device)`` -> ``{"cpu": "AMD EPYC (family 25 model 1)", "cores": 2, "torch_cpu_capability": "AVX2",
"native_bf16": false, "bf16_basis": "...", "torch": "2.13.0+cpu"}`` plus ``"gpu"`` and ``"gpu_capability"`` on CUDA.
``native_bf16`` is :func:`drq.speed.precision.native_bf16` for ``device`` (what ``precision=auto`` decides from).
"""

from __future__ import annotations

import platform
from typing import Any

import torch

from drq.machine.memory import usable_cores
from drq.speed.precision import native_bf16

__all__ = ["cpu_model", "describe"]


def cpu_model() -> str:
    """The CPU's model name with its family / model numbers where /proc/cpuinfo has them (Linux x86), else
    ``platform.processor()``."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break  # the first processor's block is enough
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    name = fields.get("model name") or platform.processor() or platform.machine()
    if "cpu family" in fields and "model" in fields:
        name = f"{name} (family {fields['cpu family']} model {fields['model']})"
    return name


def describe(device: str | torch.device = "cpu") -> dict[str, Any]:
    """CPU model, core count, torch's CPU capability and native bf16 yes/no for ``device`` (GPU name and compute
    capability on CUDA)."""
    device = torch.device(device)
    native, basis = native_bf16(device)
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores": usable_cores(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "native_bf16": native,
        "bf16_basis": basis,
        "torch": torch.__version__,
    }
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        info["gpu"] = torch.cuda.get_device_name(device)
        info["gpu_capability"] = f"{major}.{minor}"
    return info
