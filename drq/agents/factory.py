"""``make_agent`` and ``AGENTS``: build an agent from the ``agent:`` config group (re-exported by ``drq.agents``)."""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, Sequence

import torch

from drq.agents.drqv2 import DrQV2Agent
from drq.agents.sac import SACAgent
from drq.speed.compiling import check_compile_mode, compile_agent
from drq.speed.precision import resolve_precision

if TYPE_CHECKING:
    from drq.interfaces import Agent

__all__ = ["AGENTS", "TRAINER_KEYS", "make_agent", "agent_config_keys", "DrQV2Agent", "SACAgent"]

AGENTS: dict[str, type] = {"drqv2": DrQV2Agent, "sac": SACAgent}

_POSITIONAL = ("self", "obs_shape", "action_shape", "device", "precision")
TRAINER_KEYS = ("update_every_steps",)
"""Keys of the ``agent:`` config group that the trainer reads, not the agent (the update cadence, agent steps):
``make_agent`` accepts them and passes them on to no one."""


def agent_config_keys(name: str) -> list[str]:
    """The ``cfg`` keys ``make_agent(name, ...)`` accepts: the constructor's keywords besides shapes / device /
    precision, and :data:`TRAINER_KEYS`."""
    params = inspect.signature(_agent_class(name).__init__).parameters
    return [*(k for k in params if k not in _POSITIONAL), *TRAINER_KEYS]


def _agent_class(name: str) -> type:
    if name not in AGENTS:
        raise ValueError(f"unknown agent {name!r}; choices: {sorted(AGENTS)}")
    return AGENTS[name]


def make_agent(name: str, obs_shape: Sequence[int], action_shape: Sequence[int], device: str | torch.device = "cpu",
               precision: str = "fp32", *, compile: str | bool = "none", cuda_graphs: bool = False,
               **cfg: Any) -> Agent:
    """Build agent ``name`` (``'drqv2'`` | ``'sac'``) for uint8 observations ``obs_shape = (3k, H, W)`` and actions
    ``action_shape = (A,)``; ``cfg`` overrides the constructor defaults (see each agent class).

    ``precision``: ``'fp32'`` | ``'bf16'`` | ``'auto'`` (bf16 where the device computes it natively, ``drq.speed.precision``).
    ``compile``: ``'none'`` | ``'default'`` | ``'max-autotune'`` (``torch.compile`` of the networks, ``drq.speed.compiling``).
    ``cuda_graphs``: replay each update as one captured CUDA graph (CUDA only, ``drq.speed.cuda_graphs``)."""
    cls = _agent_class(name)
    valid = agent_config_keys(name)
    unknown = [k for k in cfg if k not in valid]
    if unknown:
        raise TypeError(f"make_agent({name!r}): unknown config key(s) {unknown}; valid keys: {valid}")
    mode = check_compile_mode(compile)
    precision, _ = resolve_precision(precision, device)
    agent = cls(obs_shape, action_shape, device=device, precision=precision,
                **{k: v for k, v in cfg.items() if k not in TRAINER_KEYS})
    if cuda_graphs:
        agent.enable_cuda_graphs()
    compile_agent(agent, mode)
    return agent
