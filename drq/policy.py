"""A trained agent outside the trainer: ``drq.load_policy(RUN_DIR or snapshot.pt)`` gives a :class:`Policy`.

    policy = drq.load_policy("exp_local/my_run")      # CPU; device="cuda" for a GPU
    policy.reset()                                   # at every episode's start
    action = policy.act(picture)                     # uint8 (H, W, 3) RGB, any size -> float32 (A,), env's bounds

The policy holds only what acting needs (the encoder and the actor, read from the snapshot; no critic, optimiser or
replay) and imports no hydra, omegaconf, simulator or Gymnasium. It builds its observations as every drq env does
(:mod:`drq.envs.frames`: ``to_frame``'s area resize to ``image_size``, ``FrameStack``'s k frames, oldest first), so
on the same pictures it acts exactly as the agent did in its environment. Actions are the agent's ``[-1, 1]`` mapped
onto the environment's own bounds ``low + (a + 1) / 2 * (high - low)`` (skipped where the bounds are [-1, 1], as the
env skips it): what the env would have executed.

- ``act(picture)``: the newest picture, uint8 ``(H, W, 3)`` (or a batch ``(B, H, W, 3)``, one frame stack each);
  ``reset()`` at an episode's start (``reset(i)``: only the i-th of a batch), so that the first picture fills the
  stack. ``act_on_observation(obs)``: an already stacked uint8 ``(3k, S, S)`` or ``(B, 3k, S, S)`` (numpy, or a
  torch tensor on any device: the result is then a tensor on the policy's device).
- ``deterministic=True`` (default): the mean action ``tanh(mu)``, what ``agent.act(obs, step, eval_mode=True)``
  gives. ``deterministic=False``: a sample, DrQ-v2's ``clip(tanh(mu) + sigma eps, -1, 1)`` with the std schedule at
  the snapshot's step (``stddev=`` to choose another), SAC's ``tanh(mu + sigma(s) eps)``; ``seed=`` makes it repeat.

The snapshot's ``env`` record (:func:`drq.run.provenance.env_record`) says the task, the observation's layout, the
action repeat and the action bounds. A snapshot from before that record loads where the bounds can still be known:
[-1, 1] for every dm_control task but those of :data:`drq.envs.tasks.OWN_ACTION_BOUNDS_DOMAINS`, whose bounds are read
from dm_control's action spec (one line saying so where dm_control is missing). Keys its config predates take the
schema's legacy values (:func:`drq.config.schema.fill_saved`, the one place that needs omegaconf).

Loading and bad input fail with one line: :class:`drq.run.snapshot.SnapshotError` (no snapshot, another drq's
format, a config or weights this drq cannot read) and ``ValueError`` (a picture or an observation of the wrong shape
or dtype). Nothing here changes the process (threads are the caller's: ``torch.set_num_threads``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import torch
from torch import nn

from drq.agents.networks import DrQV2Actor, Encoder, SACActor
from drq.envs.frames import FrameStack, to_frame
from drq.run import snapshot as snapshots

__all__ = ["Policy", "PolicyNetwork", "load_policy"]

_ACTORS: dict[str, tuple[type[nn.Module], int]] = {"drqv2": (DrQV2Actor, 1), "sac": (SACActor, 2)}
"""The actor class of each agent and its last layer's outputs per action dimension (SAC's: mean and log std)."""
_NEEDED = ("task_name", "frame_stack", "image_size", "action_repeat", "agent.name", "agent.feature_dim",
           "agent.hidden_dim", "agent.channels_last")  # fmt: skip
_SAMPLING = {"drqv2": "agent.stddev_schedule", "sac": "agent.log_std_bounds"}


class PolicyNetwork(nn.Module):
    """uint8 observations ``(B, 3k, S, S)`` -> the mean action ``(B, A)`` float32 in the environment's bounds: the
    agent's encoder, its actor's ``tanh(mu)`` and :meth:`to_env`. One graph, what ``python -m drq.export`` writes.

    Args:
        encoder: the agent's :class:`drq.agents.networks.Encoder`; actor: its ``DrQV2Actor`` or ``SACActor``.
        action_low, action_high: the environment's bounds, float ``(A,)``.
    """

    def __init__(self, encoder: Encoder, actor: nn.Module, action_low: Any, action_high: Any) -> None:
        super().__init__()
        self.encoder, self.actor = encoder, actor
        low, high = np.asarray(action_low, np.float64), np.asarray(action_high, np.float64)
        self.rescale = not (np.all(low == -1.0) and np.all(high == 1.0))
        device = next(encoder.parameters()).device
        self.register_buffer("action_low", torch.as_tensor(low, dtype=torch.float32, device=device))
        self.register_buffer("action_high", torch.as_tensor(high, dtype=torch.float32, device=device))
        self.register_buffer("half_range", torch.as_tensor(0.5 * (high - low), dtype=torch.float32, device=device))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.to_env(self.actor.mean_action(self.encoder(obs)))

    def to_env(self, action: torch.Tensor) -> torch.Tensor:
        """``[-1, 1]`` -> ``[low, high]``: ``low + (a + 1) * (high - low) / 2`` clamped to the bounds, the env's mapping
        (:meth:`drq.envs.split_step.SplitStepEnv._env_action`; identity for [-1, 1] bounds, also bit for bit). The
        clamp keeps a saturated action inside the bounds, which float32 rounding could otherwise cross."""
        if not self.rescale:
            return action
        scaled = self.action_low + (action + 1.0) * self.half_range
        return torch.minimum(torch.maximum(scaled, self.action_low), self.action_high)


class Policy:
    """A trained agent's policy, ready to act (see the module docstring). Built by :func:`load_policy`.

    Attributes: ``task``, ``agent`` (``'drqv2'`` | ``'sac'``), ``frame`` (the snapshot's frame), ``frame_stack`` (k),
    ``image_size`` (S, pixels), ``observation_shape`` ``(3k, S, S)``, ``action_shape`` ``(A,)``, ``action_low`` /
    ``action_high`` (float32 ``(A,)``), ``action_repeat`` (frames per action: repeat each action this many env
    steps), ``device``, ``network`` (:class:`PolicyNetwork`), ``env`` (the snapshot's env record), ``provenance``
    (the training sessions' versions and commits).
    """

    def __init__(self, network: PolicyNetwork, env: Mapping[str, Any], agent: str, frame: int, stddev: float | None,
                 provenance: list[dict[str, Any]], source: Path, seed: int | None = None) -> None:  # fmt: skip
        self.network, self.env, self.agent, self.frame = network, dict(env), agent, int(frame)
        self.provenance, self.source, self.stddev = provenance, source, stddev
        self.task = str(env["task"])
        self.observation_shape = tuple(int(n) for n in env["observation_shape"])
        self.frame_stack, self.image_size = int(env["frame_stack"]), int(env["image_size"])
        self.action_shape = tuple(int(n) for n in env["action_shape"])
        self.action_low = np.asarray(env["action_low"], np.float32)
        self.action_high = np.asarray(env["action_high"], np.float32)
        self.action_repeat = int(env["action_repeat"])
        self.device = network.action_low.device
        self._generator = None if seed is None else torch.Generator(self.device).manual_seed(int(seed))
        self._stacks: list[FrameStack] | None = None  # one per picture of a batch; None: the next act() starts
        self._fresh: set[int] = set()  # stacks whose episode starts at the next picture

    def __repr__(self) -> str:
        return (f"Policy({self.agent} on {self.task} at frame {self.frame:,}: observation {self.observation_shape} "
                f"uint8, action {self.action_shape} in [{_show(self.action_low)}, {_show(self.action_high)}], "
                f"action_repeat {self.action_repeat}, {self.device})")

    # ---------------------------------------------------------------------------------------------------- pictures
    def reset(self, index: int | Iterable[int] | None = None) -> None:
        """An episode starts: the next picture fills all k frames of the stack. ``index``: only these of a batch of
        pictures (vectorised environments); None: all."""
        if index is None:
            self._stacks, self._fresh = None, set()
        elif self._stacks is not None:
            self._fresh.update([int(index)] if isinstance(index, (int, np.integer)) else (int(i) for i in index))

    def act(self, picture: np.ndarray, deterministic: bool = True) -> np.ndarray:
        """The action for the newest picture, uint8 ``(H, W, 3)`` RGB of any size: float32 ``(A,)`` in the
        environment's bounds; a batch ``(B, H, W, 3)`` gives ``(B, A)`` (B frame stacks). The picture is resized to
        ``image_size`` (area interpolation) and pushed onto the frame stack (after :meth:`reset`: fills it)."""
        batch = isinstance(picture, np.ndarray) and picture.ndim == 4
        problem = _picture_problem(picture, self.observation_shape)
        if problem:
            raise ValueError(f"act: {problem}")
        pictures = picture if batch else picture[None]
        if self._stacks is None:
            self._stacks = [FrameStack(self.frame_stack) for _ in pictures]
            self._fresh = set(range(len(pictures)))
        elif len(pictures) != len(self._stacks):
            raise ValueError(f"act: {len(pictures)} pictures, but the episodes in progress have {len(self._stacks)} "
                             "frame stacks: call reset() to start new ones")  # fmt: skip
        observations = []
        for i, (stack, one) in enumerate(zip(self._stacks, pictures)):
            frame = to_frame(one, self.image_size)
            observations.append(stack.reset(frame) if i in self._fresh else stack.push(frame))
        self._fresh.clear()
        actions = self._act(torch.from_numpy(np.stack(observations)), deterministic).cpu().numpy()
        return actions if batch else actions[0]

    # ------------------------------------------------------------------------------------------------ observations
    def act_on_observation(self, observation: np.ndarray | torch.Tensor,
                           deterministic: bool = True) -> np.ndarray | torch.Tensor:  # fmt: skip
        """The action for a stacked observation, uint8 ``(3k, S, S)`` (k frames oldest first, RGB, channels first) or
        a batch ``(B, 3k, S, S)``: float32 ``(A,)`` / ``(B, A)`` in the environment's bounds. numpy in, numpy out; a
        torch tensor (any device) gives a tensor on the policy's device."""
        is_tensor = isinstance(observation, torch.Tensor)
        problem = _observation_problem(observation, self.observation_shape)
        if problem:
            raise ValueError(f"act_on_observation: {problem}")
        batch = observation.ndim == 4
        obs = observation if is_tensor else torch.from_numpy(np.ascontiguousarray(observation))
        actions = self._act(obs if batch else obs[None], deterministic)
        actions = actions if batch else actions[0]
        return actions if is_tensor else actions.cpu().numpy()

    @torch.inference_mode()
    def _act(self, obs: torch.Tensor, deterministic: bool) -> torch.Tensor:
        """uint8 ``(B, 3k, S, S)`` -> float32 ``(B, A)`` on the policy's device, in the environment's bounds."""
        obs = obs.to(self.device, non_blocking=True)
        if deterministic:
            return self.network(obs)
        features = self.network.encoder(obs)
        eps = torch.randn((obs.shape[0], *self.action_shape), generator=self._generator, device=self.device)
        if self.agent == "drqv2":  # the executed action of DrQ-v2's act(eval_mode=False), past its uniform phase
            action = self.network.actor(features, self.stddev).sample(clip=None, eps=eps)
        else:
            action, _ = self.network.actor(features).rsample_with_pre_tanh(eps=eps)
        return self.network.to_env(action)


def _show(values: np.ndarray) -> str:
    return f"{values[0]:g}" if np.all(values == values[0]) else "[" + ", ".join(f"{v:g}" for v in values) + "]"


def _picture_problem(picture: Any, observation_shape: tuple[int, ...]) -> str | None:
    words = "a uint8 (H, W, 3) RGB picture, or (B, H, W, 3) for a batch"
    if not isinstance(picture, np.ndarray):
        return f"expected {words} (a numpy array); got {type(picture).__name__}"
    if picture.shape == observation_shape or picture.shape[1:] == observation_shape:
        return f"expected {words}; got shape {picture.shape}, a stacked observation: use act_on_observation()"
    if picture.ndim not in (3, 4) or picture.shape[-1] != 3 or 0 in picture.shape:
        return f"expected {words}; got shape {picture.shape}"
    if picture.dtype != np.uint8:
        return f"expected {words}; got dtype {picture.dtype}"
    return None


def _observation_problem(observation: Any, shape: tuple[int, ...]) -> str | None:
    k, size = shape[0] // 3, shape[1:]
    words = f"uint8 {shape} ({k} RGB frames stacked, oldest first, channels first) or (B, {', '.join(map(str, shape))})"
    if not isinstance(observation, (np.ndarray, torch.Tensor)):
        return f"observation must be a numpy array or torch tensor, {words}; got {type(observation).__name__}"
    if observation.dtype not in (np.uint8, torch.uint8):
        return f"observation must be {words}; got dtype {observation.dtype}"
    got = tuple(observation.shape)
    if len(got) not in (3, 4):
        return f"observation must be {words}; got shape {got}"
    if got[-3] != shape[0]:
        return (f"observation has {got[-3]} channels, this policy stacks {k} frames: {shape[0]} channels (3 per RGB "
                f"frame); got shape {got}")
    if got[-2:] != size:
        return f"observation must be {words}: frames of {size[0]}x{size[1]} pixels; got shape {got}"
    return None


# ------------------------------------------------------------------------------------------------------- loading
def load_policy(source: str | Path, device: str | torch.device = "cpu", stddev: float | None = None,
                seed: int | None = None) -> Policy:  # fmt: skip
    """The policy of the agent in ``source``: a run dir (its ``snapshot.pt``) or a snapshot file.

    ``device``: ``'cpu'`` (default) or ``'cuda'`` / ``'cuda:N'``. ``stddev``: DrQ-v2's exploration std for
    ``deterministic=False`` (default: its schedule at the snapshot's agent step). ``seed``: the sampled actions'
    random stream (default: torch's global one). Raises :class:`drq.run.snapshot.SnapshotError` (one line) for a
    source that is not a snapshot this drq can read, ``ValueError`` for a device this machine lacks."""
    device = _device(device)
    path = snapshots.resolve_path(source)
    state = snapshots.load(path, mmap=True)  # only the encoder's and the actor's tensors are read from the file
    config = _settings(state, path)
    agent_name = config["agent.name"]
    agent_state = state.get("agent")
    if not isinstance(agent_state, dict) or not {"encoder", "actor"} <= set(agent_state):
        raise snapshots.SnapshotError(f"snapshot {path} holds no agent encoder and actor")
    actor_class, outputs_per_action = _ACTORS[agent_name]
    env = state.get("env") or _legacy_env(config, path, _last_layer_outputs(agent_state["actor"]) // outputs_per_action)
    obs_shape, action_dim = tuple(env["observation_shape"]), int(env["action_shape"][0])
    with torch.device("meta"):  # no initialisation: the snapshot's weights are copied in
        encoder = Encoder(obs_shape, channels_last=bool(config["agent.channels_last"]))
        sizes = (encoder.repr_dim, action_dim, int(config["agent.feature_dim"]), int(config["agent.hidden_dim"]))
        actor = actor_class(*sizes, *([config["agent.log_std_bounds"]] if agent_name == "sac" else []))
    try:  # copies of the saved tensors (their memory layout kept: channels_last convs stay so) replace the meta ones
        for module, key in ((encoder, "encoder"), (actor, "actor")):
            module.load_state_dict({k: v.to(device, copy=True) for k, v in agent_state[key].items()}, assign=True)
    except (RuntimeError, KeyError, TypeError, AttributeError) as error:
        reason = " ".join(str(error).split())
        raise snapshots.SnapshotError(f"snapshot {path} does not fit its own config: {reason[:300]}") from None
    if stddev is None and agent_name == "drqv2":
        from drq.agents.schedules import parse_schedule

        stddev = parse_schedule(config["agent.stddev_schedule"])(int(state.get("counters", {}).get("step", 0)))
    network = PolicyNetwork(encoder, actor, env["action_low"], env["action_high"]).eval()
    frame = int(state.get("counters", {}).get("frame", 0))
    provenance = state.get("provenance") if isinstance(state.get("provenance"), list) else []
    return Policy(network, env, agent_name, frame, stddev, provenance, path, seed)


def _device(device: str | torch.device) -> torch.device:
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device={device!r}: one of cpu, cuda, cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device}: this machine has no CUDA device (torch {torch.__version__}); use cpu")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device={device}: one of cpu, cuda, cuda:N")
    return device


def _lookup(config: Mapping[str, Any], dotted: str) -> tuple[bool, Any]:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _settings(state: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """The config values acting needs, by dotted key, read from the snapshot's config; where it predates one of them,
    the schema's legacy value or default (:func:`drq.config.schema.fill_saved`, which needs omegaconf)."""
    saved = state.get("config")
    if not isinstance(saved, dict) or not saved:
        raise snapshots.SnapshotError(f"snapshot {path} holds no run config")
    agent = _lookup(saved, "agent.name")[1]
    keys = (*_NEEDED, *([_SAMPLING[agent]] if agent in _SAMPLING else []))
    found = {key: _lookup(saved, key) for key in keys}
    if not all(there for there, _ in found.values()):
        from drq.config import schema as config_schema

        try:
            filled = config_schema.fill_saved(saved)
        except Exception as error:  # noqa: BLE001 -- any failure of the fill: this drq cannot read that config
            raise snapshots.SnapshotError(f"snapshot {path} holds a config this drq cannot read: "
                                          f"{str(error).splitlines()[0]}") from None  # fmt: skip
        agent = _lookup(filled, "agent.name")[1]
        keys = (*_NEEDED, *([_SAMPLING[agent]] if agent in _SAMPLING else []))
        found = {key: _lookup(filled, key) for key in keys}
    if agent not in _ACTORS:
        raise snapshots.SnapshotError(f"snapshot {path} holds agent {agent!r}; this drq knows {', '.join(_ACTORS)}")
    missing = [key for key, (there, _) in found.items() if not there]
    if missing:
        raise snapshots.SnapshotError(f"snapshot {path} has no {', '.join(missing)} in its config")
    return {key: value for key, (_, value) in found.items()}


def _last_layer_outputs(actor_state: Mapping[str, torch.Tensor]) -> int:
    """The actor's last Linear's output count (``A``, or ``2 A`` for SAC): the last 2-D weight of its state dict."""
    weights = [v for k, v in actor_state.items() if k.endswith("weight") and getattr(v, "ndim", 0) == 2]
    return int(weights[-1].shape[0]) if weights else 0


def _legacy_env(config: Mapping[str, Any], path: Path, action_dim: int) -> dict[str, Any]:
    """The env record of a snapshot from before it: the shapes and repeat from the config, the bounds of the task."""
    from drq.envs import tasks
    from drq.run.provenance import env_record

    task, size, stack = config["task_name"], int(config["image_size"]), int(config["frame_stack"])
    try:
        domain, name = tasks.resolve_task(task)
    except ValueError:
        raise snapshots.SnapshotError(f"snapshot {path} predates drq's env record and its task {task!r} is no "
                                      "dm_control task: its action bounds are unknown") from None  # fmt: skip
    if domain not in tasks.OWN_ACTION_BOUNDS_DOMAINS:
        low, high = -np.ones(action_dim), np.ones(action_dim)
    else:
        try:
            low, high = _dm_control_bounds(domain, name)
        except ImportError:
            raise snapshots.SnapshotError(
                f"snapshot {path} predates drq's env record and {task}'s action bounds are not [-1, 1]: they come "
                "from dm_control's action spec, which is not installed (pip install dm_control==1.0.50, or export "
                "the policy once where it is: python -m drq.export)") from None  # fmt: skip
    config_dict = {"task_name": task, "frame_stack": stack, "image_size": size,
                   "action_repeat": config["action_repeat"]}  # fmt: skip
    return env_record(config_dict, (3 * stack, size, size), low, high)


def _dm_control_bounds(domain: str, task: str) -> tuple[np.ndarray, np.ndarray]:
    """The task's action bounds, float64 (A,), from dm_control's action spec (loads the task's physics; no render)."""
    from drq.envs.tasks import MANIPULATION_DOMAIN

    if domain == MANIPULATION_DOMAIN:
        from dm_control import manipulation

        spec = manipulation.load(f"{task}_features", seed=0).action_spec()
    else:
        from dm_control import suite

        spec = suite.load(domain, task).action_spec()
    low = np.broadcast_to(spec.minimum, spec.shape).astype(np.float64)
    return low, np.broadcast_to(spec.maximum, spec.shape).astype(np.float64)
