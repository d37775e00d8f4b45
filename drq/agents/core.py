"""What the DrQ-v2 and SAC agents share: the plumbing around their update equations.

- ``AgentCore``: the base both agents build on: checked shapes, device and (resolved) precision, bf16 autocast, the
  ``noise`` test seam, ``histograms``, state dicts with the snapshot layout check, and ``run_update``: the batch checks,
  the copy to the device and the CUDA-graph switch, around the agent's ``update_tensors`` (the algorithm).
- checks: observation (``obs_to_tensor``) and replay batch (``check_batch``) shapes. Hyper-parameters arrive checked
  (``drq.config.schema``).
- optimisation helpers: fused Adam (``make_adam``), gradient norms (``grad_norm``), the soft target update
  (``soft_update_``) and the actor-side metrics both report (``actor_metrics``).

Nothing here knows an algorithm; the agents' modules (``drq.agents.drqv2``, ``drq.agents.sac``) hold the equations.
Units: ``step`` is always agent steps; batches are ``(B, ...)``.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Hashable, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from drq.agents.distributions import tanh_log_det_jacobian
from drq.speed.cuda_graphs import GraphedUpdate
from drq.speed.precision import check_resolved_precision

__all__ = ["AUG_PAD", "NoiseFn", "AgentCore", "draw", "check_shapes", "obs_to_tensor", "check_batch",
           "to_device_batch", "make_adam", "grad_norm", "soft_update_", "actor_metrics", "autocast_context"]

AUG_PAD = 4  # random shift: pad 4 pixels (replicate), crop back to H x W (drq.agents.augment.random_shift)

# The test seam for an update's randomness: ``agent.noise = fn`` with ``fn(name, shape) -> tensor`` supplies every
# random draw of ``update`` by name (see each agent's docstring for the names and shapes): ``*_shift`` draws are int64
# ``(n, 2)`` crop corners ``(dx, dy)`` in ``[0, 2 * AUG_PAD]`` (``drq.agents.augment.random_shift``), ``*_eps`` draws are
# standard-normal float32 ``(n, A)``. ``None`` (the default, and the only setting the trainer uses) draws them from
# torch's generator. tests/test_transcription.py uses it to feed our agents and a reference the same numbers.
NoiseFn = Callable[[str, tuple[int, ...]], torch.Tensor]


def draw(noise: NoiseFn | None, name: str, shape: tuple[int, ...], device: torch.device) -> torch.Tensor | None:
    """Draw ``name`` of ``shape`` from the test seam ``noise`` (on ``device``), or ``None`` when there is no seam (the
    caller then draws from torch's generator)."""
    if noise is None:
        return None
    value = noise(name, tuple(shape))
    if tuple(value.shape) != tuple(shape):
        raise ValueError(f"noise({name!r}) must have shape {tuple(shape)}, got {tuple(value.shape)}")
    return value.to(device)


# ------------------------------------------------------------------------------------------------------------ checks
def check_shapes(obs_shape: Sequence[int], action_shape: Sequence[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Validate ``obs_shape = (C, H, W)`` and ``action_shape = (A,)``; return them as int tuples."""
    try:
        obs_t = tuple(int(v) for v in obs_shape)
        act_t = tuple(int(v) for v in action_shape)
    except (TypeError, ValueError):
        raise ValueError(f"obs_shape must be (C, H, W) and action_shape (A,), got {obs_shape!r} and "
                         f"{action_shape!r}") from None
    if len(obs_t) != 3 or min(obs_t) < 1:
        raise ValueError(f"obs_shape must be (C, H, W) with positive sizes, got {obs_shape!r}")
    if len(act_t) != 1 or act_t[0] < 1:
        raise ValueError(f"action_shape must be (A,) with A >= 1, got {action_shape!r}")
    return obs_t, act_t


def obs_to_tensor(obs: Any, obs_shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """Check one observation (np.ndarray uint8 ``obs_shape``) and return it as a ``(1, C, H, W)`` uint8 tensor."""
    if not isinstance(obs, np.ndarray):
        raise ValueError(f"act: obs must be a numpy array of uint8 with shape {obs_shape}, got {type(obs).__name__}")
    if obs.dtype != np.uint8:
        raise ValueError(f"act: obs must have dtype uint8 (raw pixels), got dtype {obs.dtype}")
    if obs.shape != obs_shape:
        raise ValueError(f"act: obs must have shape {obs_shape} (3 * frame_stack, H, W), got shape {obs.shape}")
    return torch.as_tensor(obs, device=device).unsqueeze(0)


def check_batch(batch: Any, obs_shape: tuple[int, ...], action_dim: int) -> None:
    """Cheap shape/dtype checks on a replay batch (no host sync)."""
    for name in ("obs", "action", "reward", "discount", "next_obs"):
        if not hasattr(batch, name):
            raise ValueError(f"update: batch needs fields obs, action, reward, discount, next_obs; missing {name!r}")
    b = batch.obs.shape[0]
    for name in ("obs", "next_obs"):
        t = getattr(batch, name)
        if t.dtype != torch.uint8 or tuple(t.shape[1:]) != obs_shape:
            raise ValueError(f"update: batch.{name} must be uint8 (B, {', '.join(map(str, obs_shape))}), got "
                             f"{t.dtype} {tuple(t.shape)}")
    if tuple(batch.action.shape) != (b, action_dim):
        raise ValueError(f"update: batch.action must be ({b}, {action_dim}), got {tuple(batch.action.shape)}")
    for name in ("reward", "discount"):
        if tuple(getattr(batch, name).shape) != (b, 1):
            raise ValueError(f"update: batch.{name} must be ({b}, 1), got {tuple(getattr(batch, name).shape)}")


def to_device_batch(batch: Any, device: torch.device) -> tuple[torch.Tensor, ...]:
    """``(obs, action, reward, discount, next_obs)`` on ``device`` (no copy when already there)."""
    return tuple(getattr(batch, k).to(device, non_blocking=True)
                 for k in ("obs", "action", "reward", "discount", "next_obs"))


# ------------------------------------------------------------------------------------------------------ optimisation
def autocast_context(device: torch.device, precision: str,
                     cache_enabled: bool = True) -> contextlib.AbstractContextManager:
    """bf16 autocast around network forward passes (``precision='bf16'``), or nothing (``'fp32'``). CUDA-graph capture
    needs ``cache_enabled=False`` (cached bf16 weight copies would be freed outside the graph's memory pool)."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16, cache_enabled=cache_enabled)
    return contextlib.nullcontext()


def make_adam(params: Iterable[nn.Parameter | torch.Tensor], lr: float, device: torch.device) -> torch.optim.Adam:
    """Adam with the fused kernel where available (CPU and CUDA), else the foreach one."""
    params = list(params)
    if device.type in ("cpu", "cuda"):
        return torch.optim.Adam(params, lr=lr, fused=True)
    return torch.optim.Adam(params, lr=lr, foreach=True)


def grad_norm(params: Iterable[nn.Parameter]) -> torch.Tensor:
    """Total L2 norm of the parameters' gradients (a 0-dim tensor on their device; 0 if none has a gradient)."""
    params = list(params)
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros((), device=params[0].device if params else "cpu")
    if hasattr(torch.nn.utils, "get_total_norm"):  # torch >= 2.6
        return torch.nn.utils.get_total_norm(grads, foreach=True)
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))


@torch.no_grad()
def soft_update_(target: nn.Module, online: nn.Module, tau: float) -> None:
    """``target <- target + tau * (online - target)`` for every parameter (in place)."""
    torch._foreach_lerp_(list(target.parameters()), list(online.parameters()), tau)


@torch.no_grad()
def actor_metrics(actor_loss: torch.Tensor, dist: torch.distributions.Distribution, log_prob: torch.Tensor,
                  executed: torch.Tensor, pre_tanh: torch.Tensor, std: torch.Tensor,
                  actor_grad_norm: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The policy's metrics (0-dim) and histograms, with the names the health monitor reads (docs/health.md).

    ``dist``: the policy at the batch's states (its ``entropy()`` is ``(B,)``); ``log_prob (B, 1)`` of the ``executed``
    actions ``(B, A)``; ``pre_tanh (B, A)``: the pre-tanh values ``u`` whose Jacobian is reported; ``std``: 0-dim.

    Returns ``(metrics, histograms)``: ``actor_loss``, ``actor_logprob`` (batch mean), ``actor_entropy``,
    ``actor_std``, ``actor_saturation`` (fraction of ``|a| > 0.99``), ``actor_log_det_jacobian`` (mean of
    ``sum_i log(1 - tanh^2 u_i)``, <= 0), ``actor_grad_norm``; histograms ``actor_logprob (B,)`` and
    ``abs_pre_tanh (B A,)``."""
    histograms = {"actor_logprob": log_prob.detach().squeeze(-1), "abs_pre_tanh": pre_tanh.detach().abs().flatten()}
    metrics = {
        "actor_loss": actor_loss.detach(), "actor_logprob": log_prob.detach().mean(),
        "actor_entropy": dist.entropy().mean(), "actor_std": std,
        "actor_saturation": (executed.detach().abs() > 0.99).float().mean(),
        "actor_log_det_jacobian": tanh_log_det_jacobian(pre_tanh.detach()).mean(),
        "actor_grad_norm": actor_grad_norm,
    }
    return metrics, histograms


# -------------------------------------------------------------------------------------------------------- the base
class AgentCore:
    """The plumbing of an agent (``drq.interfaces.Agent``); subclasses add the networks and the update.

    A subclass sets ``name``, builds its modules, optimisers and tensors in ``__init__`` after calling
    ``AgentCore.__init__``, and lists them in ``state_parts()`` (the snapshot layout: one key per part) and its
    optimisers in ``optimizers()`` (for CUDA graphs). It implements ``act(obs, step, eval_mode)``, ``update(batch,
    step)`` (which calls ``run_update`` with the step's branch and scalars) and ``update_tensors(branch, obs, action,
    reward, discount, next_obs, **scalars)``: the update on device tensors, what a CUDA graph records.

    Args:
        obs_shape: ``(3 * frame_stack, H, W)``; action_shape: ``(A,)``; device: torch device.
        precision: ``'fp32'`` or ``'bf16'`` (resolved: ``'auto'`` is resolved by ``drq.agents.make_agent``): bf16
            autocast around the network passes; losses and optimiser state stay fp32.
    """

    name = ""

    def __init__(self, obs_shape: Sequence[int], action_shape: Sequence[int], device: str | torch.device,
                 precision: str) -> None:
        self.obs_shape, self.action_shape = check_shapes(obs_shape, action_shape)
        self.device = torch.device(device)
        self.precision = check_resolved_precision(precision)
        self.histograms: dict[str, torch.Tensor] = {}  # from the last update, e.g. actor_logprob (B,)
        self.graphed_update: GraphedUpdate | None = None
        self.noise: NoiseFn | None = None  # test seam for the update's random draws (NoiseFn)

    # ----------------------------------------------------------------------------------- what a subclass declares
    def state_parts(self) -> list[str]:
        """Attribute names saved by ``state_dict``, in order: modules and optimisers (their state dicts) and tensors."""
        raise NotImplementedError

    def optimizers(self) -> tuple[torch.optim.Optimizer, ...]:
        """Every optimiser the update steps (made capturable for CUDA graphs)."""
        raise NotImplementedError

    def update_tensors(self, branch: Hashable, *tensors: torch.Tensor, **scalars: Any) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    # ------------------------------------------------------------------------------------------------ plumbing
    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast (``precision='bf16'``) or nothing; without the weight cache while CUDA-graphed."""
        return autocast_context(self.device, self.precision, cache_enabled=self.graphed_update is None)

    def draw(self, name: str, shape: tuple[int, ...]) -> torch.Tensor | None:
        """The test seam's draw ``name`` (see ``NoiseFn``), or ``None``: draw from torch's generator."""
        return draw(self.noise, name, shape, self.device)

    def run_update(self, batch: Any, branch: Hashable = (), **scalars: float) -> dict[str, torch.Tensor]:
        """Check ``batch`` (``replay.Batch``), copy it to the device and run ``update_tensors(branch, obs, action,
        reward, discount, next_obs, **scalars)``: eagerly, or as the replayed CUDA graph of ``branch`` once
        ``enable_cuda_graphs`` was called (the scalars then 0-dim tensors the graph reads). Returns the metrics that
        branch computed as 0-dim device tensors (SAC's critic-only updates have no actor metrics: the trainer's metric
        window averages each metric over the updates that computed it)."""
        check_batch(batch, self.obs_shape, self.action_shape[0])
        tensors = to_device_batch(batch, self.device)
        if self.graphed_update is not None:
            return dict(self.graphed_update(branch, tensors, scalars))
        return self.update_tensors(branch, *tensors, **scalars)

    def enable_cuda_graphs(self, warmup: int = 3, capture: bool = True) -> None:
        """Run every later ``update`` as a replayed CUDA graph (``drq.speed.cuda_graphs``), one per branch, each
        captured after ``warmup`` eager updates of that branch. ``capture=False`` keeps the static-buffer path without
        recording (tests, any device)."""
        self.graphed_update = GraphedUpdate(self.update_tensors, self.optimizers(), self.device, warmup=warmup,
                                            capture=capture)

    def state_dict(self) -> dict[str, Any]:
        """One entry per ``state_parts()`` name: a module's or optimiser's state dict, or a tensor (cloned). Tensors
        and plain containers only: ``torch.load(weights_only=True)``-safe."""
        state: dict[str, Any] = {}
        for key in self.state_parts():
            part = getattr(self, key)
            state[key] = part.detach().clone() if isinstance(part, torch.Tensor) else part.state_dict()
        return state

    def check_state_keys(self, state: Mapping[str, Any]) -> None:
        """The snapshot layout check: ``state`` must have exactly this agent's ``state_parts()``."""
        expected = set(self.state_parts())
        if set(state) != expected:
            raise ValueError(f"{self.name} state_dict: expected keys {sorted(expected)}, got {sorted(state)}")

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Load a ``state_dict()`` (same keys, else ``ValueError`` naming both sets); captured CUDA graphs are
        dropped (they point at the replaced optimiser state) and captured anew by the next updates."""
        self.check_state_keys(state)
        for key in self.state_parts():
            part = getattr(self, key)
            if isinstance(part, torch.Tensor):
                with torch.no_grad():
                    part.copy_(torch.as_tensor(state[key], dtype=part.dtype))
            else:
                part.load_state_dict(state[key])
        if self.graphed_update is not None:
            self.graphed_update.reset()
