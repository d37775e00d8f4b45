"""The two interfaces the loop is written against: ``Agent`` and ``Env`` (structural, ``typing.Protocol``).

``drq.run.trainer``, ``drq.run.evaluation`` and ``drq.evaluate`` use an agent and an environment through these members only,
so any object that has them plugs in (tests/test_interfaces.py checks that both agents, ``drq.envs.pixels.PixelEnv`` and
``drq.envs.worker.AsyncEnv`` do, signatures included). Units: ``step`` is agent steps (``frame = step *
action_repeat``); observations are uint8 ``(3k, H, W)``, actions float32 ``(A,)`` in [-1, 1].

Both are ``runtime_checkable``: ``isinstance(x, Agent)`` checks that the members exist (not their signatures).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Protocol, runtime_checkable

if TYPE_CHECKING:  # annotations only: importing this module costs nothing (no torch, no dm_control)
    import numpy as np
    import torch

    from drq.envs.timestep import TimeStep

__all__ = ["Agent", "Env", "TransitionBatch"]


@runtime_checkable
class TransitionBatch(Protocol):
    """What ``Agent.update`` reads from a replay batch (``replay.Batch`` has it): uint8 ``obs`` / ``next_obs``
    ``(B, 3k, H, W)``, float32 ``action (B, A)``, n-step ``reward (B, 1)`` and ``discount (B, 1)``."""

    @property
    def obs(self) -> torch.Tensor: ...

    @property
    def action(self) -> torch.Tensor: ...

    @property
    def reward(self) -> torch.Tensor: ...

    @property
    def discount(self) -> torch.Tensor: ...

    @property
    def next_obs(self) -> torch.Tensor: ...


@runtime_checkable
class Agent(Protocol):
    """An agent as the trainer, the evaluation and the snapshots use it (``drq.agents.make_agent`` builds one).

    ``name``: the agent's config name (``'drqv2'`` | ``'sac'``). ``histograms``: per-sample tensors of the last update (for example
    ``actor_logprob (B,)``), logged to wandb every ``histogram_every_frames``."""

    name: str
    histograms: dict[str, torch.Tensor]

    def act(self, obs: np.ndarray, step: int, eval_mode: bool) -> np.ndarray:
        """Action float32 ``(A,)`` for one observation uint8 ``(3k, H, W)`` at agent step ``step``; the mean action
        when ``eval_mode``."""
        ...

    def update(self, batch: TransitionBatch, step: int) -> dict[str, torch.Tensor]:
        """One learning update at agent step ``step``; metrics are 0-dim tensors left on the device (no host sync;
        names in docs/architecture.md)."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Networks, optimisers and other learned state: tensors and plain containers only (the snapshot's
        ``agent`` entry, ``torch.load(weights_only=True)``-safe)."""
        ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a ``state_dict()``; ``ValueError`` naming the keys when its layout is not this agent's."""
        ...


@runtime_checkable
class Env(Protocol):
    """A pixel environment as the trainer and the evaluation use it: ``drq.envs.pixels.make_env``'s in-process env and
    ``drq.envs.worker.AsyncEnv`` (the same env in a worker process).

    ``observation_shape = (3k, H, W)``, ``action_shape = (A,)``; actions are given in [-1, 1] and the env maps them
    onto its own bounds ``[action_low, action_high]`` (what a policy outside the trainer must do too). ``step(a)`` equals ``step_async(a)`` then
    ``step_wait()``; the split lets the caller learn while the env steps and renders."""

    observation_shape: tuple[int, ...]
    action_shape: tuple[int, ...]
    action_low: np.ndarray  # float64 (A,): the environment's own bounds, onto which the agent's [-1, 1] is mapped
    action_high: np.ndarray

    def reset(self, seed: int | None = None) -> TimeStep:
        """Start an episode: a ``drq.envs.pixels.TimeStep`` with ``first=True``; ``seed`` re-seeds the task's initial-state
        RandomState first (``None``: the env's own stream goes on)."""
        ...

    def step(self, action: np.ndarray) -> TimeStep:
        """One agent step (``action_repeat`` frames) with ``action`` float32 ``(A,)``."""
        ...

    def step_async(self, action: np.ndarray) -> None:
        """Start a step; its TimeStep comes from ``step_wait()``."""
        ...

    def step_wait(self) -> TimeStep:
        """The TimeStep of the pending ``step_async``."""
        ...

    def render(self, size: int = 256) -> np.ndarray:
        """The task's camera view, uint8 ``(size, size, 3)`` (videos)."""
        ...

    def close(self) -> None:
        """Release the renderer / worker process."""
        ...
