"""``torch.compile`` for an agent's networks (``compile=default|max-autotune``; ``none`` leaves them eager).

What is compiled: the encoder (and SAC's target encoder), the critic, the target critic and the actor's trunk and
policy MLP -- every module whose forward is tensors in, tensors out. The distributions built from the actor's
output, the losses, the optimisers and the soft update stay eager (on a GPU, ``cuda_graphs=true`` records those as
well, see ``drq.speed.cuda_graphs``). Modules are compiled in place (``nn.Module.compile``), so parameter names, state
dicts and snapshots are unchanged, and a snapshot taken with one setting resumes with the other.

Compilation happens on the first update (and the first ``act``): about 20 s for DrQ-v2 on the 2-core development
machine. Shapes are fixed (batch size, 84x84), so it happens once per shape: ``act`` (batch 1) and ``update`` (batch
B, or K*B for SAC) each compile once.

On that CPU it does not pay: ``python bench/update.py --agent drqv2 --compile default`` ran 3.56-3.67 updates/s
against 3.56-3.93 without (bf16, batch 256, runs alternated): the convolutions are oneDNN calls either way and the
rest is small. It is meant for GPUs, where fusing the many small elementwise kernels matters; it is off by default.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from drq.speed import COMPILE_MODES

__all__ = ["COMPILE_MODES", "compile_agent", "check_compile_mode"]


def check_compile_mode(mode: Any) -> str:
    """``mode`` if it is one of ``COMPILE_MODES`` (``False``/``None`` mean ``'none'``, ``True`` ``'default'``)."""
    if mode is None or mode is False:
        return "none"
    if mode is True:
        return "default"
    if mode not in COMPILE_MODES:
        raise ValueError(f"compile must be one of {list(COMPILE_MODES)}, got {mode!r}")
    return mode


def compiled_modules(agent: Any) -> list[nn.Module]:
    """The agent's tensor-to-tensor modules that ``compile_agent`` compiles (SAC's target encoder when it has one)."""
    modules = [agent.encoder, agent.critic, agent.critic_target, agent.actor.trunk, agent.actor.policy]
    if getattr(agent, "target_encoder", None) is not None:
        modules.append(agent.target_encoder)
    return modules


def compile_agent(agent: Any, mode: Any = "default") -> str:
    """Compile ``agent``'s networks in place with ``torch.compile(mode=...)``; returns the checked mode.

    ``'max-autotune'`` lets inductor benchmark kernel choices (longer compile, sometimes faster kernels on GPU). CUDA
    graphs are not requested here (``reduce-overhead``): ``cuda_graphs=true`` captures the whole update instead, which
    also covers the optimisers."""
    mode = check_compile_mode(mode)
    if mode == "none":
        return mode
    options = {"mode": mode} if mode != "default" else {}
    if mode == "max-autotune" and agent.device.type == "cuda":
        options = {"mode": "max-autotune-no-cudagraphs"}
    for module in compiled_modules(agent):
        module.compile(dynamic=False, **options)
    return mode
