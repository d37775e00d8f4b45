"""``drq.load_policy``: a trained agent acting outside the trainer, against the agent itself on a recorded episode of
its own environment (the pictures the env rendered), the env's own action mapping, the distributions' sampling
formulas, older snapshots, bad input (one line each) and what a fresh interpreter imports to load and act."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

import drq
from drq.agents import make_agent
from drq.agents.networks import DrQV2Actor, SACActor
from drq.config import schema as config_schema
from drq.run import provenance
from drq.run import snapshot as snapshots
from drq.run.build import env_factory, make_agent_from_config

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Episodes:
    """What the debug run's agent saw and did in its own environment: ``pictures`` (per episode, the uint8 (S, S, 3)
    pictures the env rendered, in order), ``observations`` uint8 (N, 3k, S, S) and the agent's eval ``actions``
    float32 (N, A), both over all episodes in order; ``agent`` (fp32) and ``cfg``."""

    pictures: list[list[np.ndarray]]
    observations: np.ndarray
    actions: np.ndarray
    agent: object
    cfg: config_schema.RunConfig


def record_episodes(run_dir: Path, steps: tuple[int | None, ...] = (40, None)) -> Episodes:
    """Play the snapshot's agent (fp32, mean actions) in its run's environment: one episode per entry of ``steps``
    (agent steps, None: to the env's end), recording every picture the env renders."""
    state = snapshots.load(run_dir)
    cfg = config_schema.from_saved(state["config"])
    env = env_factory(cfg)()
    pictures: list[list[np.ndarray]] = []
    render = env.render
    env.render = lambda size=256: pictures[-1].append(render(size)) or pictures[-1][-1]  # what the frames come from
    agent = make_agent_from_config(cfg, env.observation_shape, env.action_shape, "cpu", "fp32")
    agent.load_state_dict(state["agent"])
    step = int(state["counters"]["step"])
    observations, actions = [], []
    try:
        for limit in steps:
            pictures.append([])
            ts = env.reset()
            for _ in range(limit or 10**6):
                observations.append(ts.observation)
                actions.append(agent.act(ts.observation, step, eval_mode=True))
                ts = env.step(actions[-1])
                if ts.last:
                    break
            pictures[-1].pop()  # rendered after the episode's last action: no action was taken on it
    finally:
        env.close()
    return Episodes(pictures, np.stack(observations), np.stack(actions), agent, cfg)


@pytest.fixture(scope="module")
def episodes(debug_run) -> Episodes:
    return record_episodes(debug_run.run_dir)


def save_agent(run_dir: Path, agent, config: dict, env: dict | None, step: int = 0) -> Path:
    """``agent`` as a snapshot in ``run_dir`` with ``config`` and the env record ``env`` (None: none, as before it)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    state = {"config": config, "agent": agent.state_dict(), "counters": {"step": step, "frame": 2 * step}}
    snapshots.save(run_dir / snapshots.FILENAME, {**state, **({"env": env} if env is not None else {})})
    return run_dir


def small_config(agent: str, task: str, size: int = 32) -> dict:
    config = config_schema.defaults(agent)
    config.update(task_name=task, image_size=size, feature_dim=8, hidden_dim=16)
    config["agent"].update(feature_dim=8, hidden_dim=16)
    return config


def small_agent(config: dict, action_dim: int):
    torch.manual_seed(0)
    kwargs = {k: v for k, v in config["agent"].items() if k != "name"}
    return make_agent(config["agent"]["name"], (3 * config["frame_stack"], config["image_size"], config["image_size"]),
                      (action_dim,), "cpu", "fp32", **kwargs)  # fmt: skip


# ------------------------------------------------------------------------------------------------ acting right
def test_the_policy_acts_as_the_agent_did_on_its_recorded_episodes(debug_run, episodes):
    """Fed the pictures its environment rendered, one at a time with reset() at each episode's start, the policy gives
    the agent's own evaluation actions (same frames: same resize, same stack order, same first-frame fill)."""
    policy = drq.load_policy(debug_run.run_dir)
    assert policy.observation_shape == episodes.observations.shape[1:] and policy.task == "cartpole_swingup"
    assert [len(e) for e in episodes.pictures] == [40, 125] and len(episodes.observations) >= 100
    got = []
    for pictures in episodes.pictures:
        policy.reset()
        got += [policy.act(picture) for picture in pictures]
    got = np.stack(got)
    assert got.dtype == np.float32 and got.shape == episodes.actions.shape
    np.testing.assert_allclose(got, episodes.actions, rtol=0, atol=1e-6)
    # the comparison can fail: the same frames in another order (newest first) move the actions far past 1e-6
    n, c, size = episodes.observations.shape[0], episodes.observations.shape[1], episodes.observations.shape[2]
    newest_first = episodes.observations.reshape(n, c // 3, 3, size, size)[:, ::-1].reshape(n, c, size, size)
    assert np.abs(policy.act_on_observation(newest_first) - episodes.actions).max() > 1e-4
    # the stacked observations, at once: the batch path
    batched = policy.act_on_observation(episodes.observations)
    np.testing.assert_allclose(batched, episodes.actions, rtol=0, atol=1e-5)
    # as a torch tensor: a tensor back, the same actions
    tensor = policy.act_on_observation(torch.from_numpy(episodes.observations[:5]))
    assert isinstance(tensor, torch.Tensor) and tensor.dtype == torch.float32
    np.testing.assert_allclose(tensor.numpy(), episodes.actions[:5], rtol=0, atol=1e-5)


def test_a_batch_of_pictures_keeps_one_frame_stack_each(debug_run, episodes):
    """Two episodes side by side as a batch (B = 2), the second restarted alone with reset(1): each row acts as the
    same pictures one at a time."""
    policy, single = drq.load_policy(debug_run.run_dir), drq.load_policy(debug_run.run_dir)
    a, b = episodes.pictures[1][:12], episodes.pictures[0][:12]
    expected_b = []
    single.reset()
    expected_b += [single.act(p) for p in b[:6]]
    single.reset()  # the second row's episode restarts at picture 6
    expected_b += [single.act(p) for p in b[6:]]
    got = []
    policy.reset()
    for i in range(12):
        if i == 6:
            policy.reset(1)
        got.append(policy.act(np.stack([a[i], b[i]])))
    got = np.stack(got)
    np.testing.assert_allclose(got[:, 0], episodes.actions[40:52], rtol=0, atol=1e-5)
    np.testing.assert_allclose(got[:, 1], np.stack(expected_b), rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="3 pictures, but the episodes in progress have 2 frame stacks"):
        policy.act(np.stack([a[0]] * 3))


def test_a_picture_of_another_size_is_resized_as_every_env_resizes(debug_run, episodes):
    """A larger, non-square picture goes through drq.envs.frames.to_frame (area interpolation, stretched), as a
    Gymnasium env's does."""
    import cv2

    from drq.envs.frames import FrameStack, to_frame

    policy = drq.load_policy(debug_run.run_dir)
    large = [cv2.resize(p, (130, 100), interpolation=cv2.INTER_LINEAR) for p in episodes.pictures[1][:5]]
    stack, observations = FrameStack(policy.frame_stack), []
    for i, picture in enumerate(large):
        frame = to_frame(picture, policy.image_size)
        observations.append(stack.reset(frame) if i == 0 else stack.push(frame))
    policy.reset()
    got = np.stack([policy.act(p) for p in large])
    np.testing.assert_allclose(got, policy.act_on_observation(np.stack(observations)), rtol=0, atol=1e-6)


def test_the_actors_mean_action_is_their_distributions_mean():
    """mean_action (what the policy and the exported graph compute) is forward(...).mean, bit for bit."""
    torch.manual_seed(0)
    features = torch.randn(7, 40)
    drqv2, sac = DrQV2Actor(40, 3, 8, 16), SACActor(40, 3, 8, 16)
    assert torch.equal(drqv2.mean_action(features), drqv2(features, 0.3).mean)
    assert torch.equal(sac.mean_action(features), sac(features).mean)


def test_actions_land_in_the_environments_own_bounds_as_the_env_maps_them(tmp_path, episodes):
    """quadruped's bounds are not [-1, 1]: the policy's actions equal the env's own mapping (PixelEnv._env_action)
    of the agent's action; a snapshot from before the env record reads them from dm_control, and says in one line
    what is missing where dm_control is not installed."""
    from drq.envs.pixels import PixelEnv

    env = PixelEnv("quadruped_walk", frame_stack=3, size=32, seed=1)
    try:
        assert not (np.all(env.action_low == -1) and np.all(env.action_high == 1))
        config = small_config("drqv2", "quadruped_walk", size=32)
        agent = small_agent(config, env.action_shape[0])
        record = provenance.env_record(config, env.observation_shape, env.action_low, env.action_high)
        rng = np.random.default_rng(1)
        observations = rng.integers(0, 256, (20, *env.observation_shape), dtype=np.uint8)
        expected = np.stack([env._env_action(agent.act(o, 0, eval_mode=True)) for o in observations])
    finally:
        env.close()
    policy = drq.load_policy(save_agent(tmp_path / "new", agent, config, record))
    got = policy.act_on_observation(observations)
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-6)
    assert np.all(got >= policy.action_low - 1e-6) and np.all(got <= policy.action_high + 1e-6)
    old = drq.load_policy(save_agent(tmp_path / "old", agent, config, None))  # no env record: dm_control's spec
    np.testing.assert_array_equal(old.act_on_observation(observations), got)
    assert old.env == policy.env


def test_an_old_snapshot_of_a_task_with_its_own_bounds_needs_dm_control(tmp_path, monkeypatch):
    config = small_config("drqv2", "quadruped_walk", size=32)
    run_dir = save_agent(tmp_path, small_agent(config, 12), config, None)
    monkeypatch.setitem(sys.modules, "dm_control", None)  # as if not installed: importing it raises ImportError
    with pytest.raises(snapshots.SnapshotError) as error:
        drq.load_policy(run_dir)
    message = str(error.value)
    assert "\n" not in message and "quadruped_walk's action bounds are not [-1, 1]" in message
    assert "pip install dm_control" in message
    unit = small_config("drqv2", "walker_walk", size=32)  # a task with [-1, 1] bounds needs no dm_control
    policy = drq.load_policy(save_agent(tmp_path / "walker", small_agent(unit, 6), unit, None))
    assert policy.action_low.tolist() == [-1.0] * 6 and policy.action_high.tolist() == [1.0] * 6


@pytest.mark.parametrize("agent_name", ["drqv2", "sac"])
def test_sampling_follows_each_agents_policy_and_repeats_with_a_seed(tmp_path, agent_name):
    """deterministic=False: DrQ-v2's clip(tanh(mu) + sigma(t) eps) with the std schedule at the snapshot's step, SAC's
    tanh(mu + sigma(s) eps), with eps from the policy's seeded generator; deterministic: agent.act's mean."""
    config = small_config(agent_name, "walker_walk", size=32)
    agent = small_agent(config, 6)
    step = 150
    record = provenance.env_record(config, (9, 32, 32), -np.ones(6), np.ones(6))
    run_dir = save_agent(tmp_path, agent, config, record, step=step)
    observations = np.random.default_rng(2).integers(0, 256, (4, 9, 32, 32), dtype=np.uint8)
    policy = drq.load_policy(run_dir, seed=5)
    mean = np.stack([agent.act(o, step, eval_mode=True) for o in observations])
    np.testing.assert_allclose(policy.act_on_observation(observations), mean, rtol=0, atol=1e-6)
    sampled = policy.act_on_observation(observations, deterministic=False)
    eps = torch.randn((4, 6), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        features = agent.encoder(torch.from_numpy(observations))
        if agent_name == "drqv2":
            std = agent.stddev(step)
            assert policy.stddev == std and 0.1 < std < 1.0
            expected = (torch.tanh(agent.actor(features, std).pre_tanh_mean) + std * eps).clamp(-1 + 1e-6, 1 - 1e-6)
        else:
            dist = agent.actor(features)
            expected = torch.tanh(dist.loc + dist.scale * eps)
    np.testing.assert_allclose(sampled, expected.numpy(), rtol=0, atol=1e-6)
    assert np.abs(sampled - mean).max() > 1e-3
    again = drq.load_policy(run_dir, seed=5).act_on_observation(observations, deterministic=False)
    np.testing.assert_array_equal(again, sampled)


# ------------------------------------------------------------------------------------------------- older drq
def test_a_snapshot_from_before_the_env_record_and_a_config_key_loads_the_same(debug_run, episodes, tmp_path):
    """Without the env record and a config key (agent.channels_last: its default, filled by the schema's legacy
    fill), the snapshot gives the same policy."""
    state = torch.load(debug_run.run_dir / "snapshot.pt", weights_only=True)
    assert state["env"]["action_low"] == [-1.0]
    del state["env"], state["config"]["agent"]["channels_last"]
    torch.save(state, tmp_path / "snapshot.pt")
    old = drq.load_policy(tmp_path)
    new = drq.load_policy(debug_run.run_dir)
    assert old.env == new.env
    np.testing.assert_array_equal(old.act_on_observation(episodes.observations[:20]),
                                  new.act_on_observation(episodes.observations[:20]))  # fmt: skip


# ------------------------------------------------------------------------------------------- bad input, one line
def _one_line(error: pytest.ExceptionInfo, *parts: str) -> None:
    message = str(error.value)
    assert "\n" not in message, message
    for part in parts:
        assert part in message, message


def test_bad_sources_fail_in_one_line(debug_run, tmp_path):
    with pytest.raises(snapshots.SnapshotError) as error:
        drq.load_policy(tmp_path)  # a run dir without a snapshot
    _one_line(error, f"no snapshot at {tmp_path / 'snapshot.pt'}")
    torch.save({"format": "drq-snapshot-v0", "agent": {}}, tmp_path / "snapshot.pt")
    with pytest.raises(snapshots.SnapshotError) as error:
        drq.load_policy(tmp_path)  # another drq's format
    _one_line(error, "format 'drq-snapshot-v0', expected 'drq-snapshot-v1'")
    state = torch.load(debug_run.run_dir / "snapshot.pt", weights_only=True)
    state["config"]["agent"]["hidden_dim"] = 64  # weights that do not fit the config
    torch.save(state, tmp_path / "snapshot.pt")
    with pytest.raises(snapshots.SnapshotError) as error:
        drq.load_policy(tmp_path)
    _one_line(error, "does not fit its own config", "size mismatch")
    with pytest.raises(ValueError) as error:
        drq.load_policy(debug_run.run_dir, device="tpu")
    _one_line(error, "device=", "cpu, cuda")


def test_bad_pictures_and_observations_fail_in_one_line(debug_run):
    policy = drq.load_policy(debug_run.run_dir)
    s = policy.image_size
    cases = [
        (lambda: policy.act(np.zeros((s, s, 3), np.float32)), "got dtype float32"),
        (lambda: policy.act(np.zeros((s, s), np.uint8)), f"got shape ({s}, {s})"),
        (lambda: policy.act(np.zeros((s, s, 4), np.uint8)), f"got shape ({s}, {s}, 4)"),
        (lambda: policy.act([[0, 0, 0]]), "got list"),
        (lambda: policy.act(np.zeros((9, s, s), np.uint8)), "a stacked observation: use act_on_observation()"),
        (lambda: policy.act_on_observation(np.zeros((6, s, s), np.uint8)),
         f"observation has 6 channels, this policy stacks 3 frames: 9 channels (3 per RGB frame); got shape (6, {s}"),
        (lambda: policy.act_on_observation(np.zeros((2, 12, s, s), np.uint8)), "observation has 12 channels"),
        (lambda: policy.act_on_observation(np.zeros((9, s, s), np.float32)), "got dtype float32"),
        (lambda: policy.act_on_observation(np.zeros((9, 84, 84), np.uint8)), f"frames of {s}x{s} pixels"),
        (lambda: policy.act_on_observation(np.zeros((s, s, 3), np.uint8)), "observation has 48 channels"),
    ]  # fmt: skip
    for call, part in cases:
        with pytest.raises(ValueError) as error:
            call()
        _one_line(error, part)


# ------------------------------------------------------------------------------- no trainer, no simulator needed
IMPORT_CHECK = """
import json, sys
import drq
torch_on_import = "torch" in sys.modules
policy = drq.load_policy(sys.argv[1])
import numpy as np
policy.reset()
action = policy.act(np.zeros((100, 120, 3), np.uint8))  # another size: the resize runs too
action = policy.act_on_observation(np.zeros(policy.observation_shape, np.uint8))
print(json.dumps({"torch_on_import": torch_on_import, "action": action.tolist(),
                  "loaded": [m for m in ("hydra", "omegaconf", "dm_control", "gymnasium", "mujoco", "wandb")
                             if m in sys.modules]}))
"""


def test_loading_and_acting_import_no_trainer_config_or_simulator(debug_run):
    """A fresh interpreter (the point: this test process has them all loaded) loads the debug run's policy and acts
    with hydra, omegaconf, dm_control, gymnasium, mujoco and wandb never imported; ``import drq`` alone imports no
    torch."""
    done = subprocess.run([sys.executable, "-c", IMPORT_CHECK, str(debug_run.run_dir)], capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"torch_on_import": False, "action": result["action"], "loaded": []}
    assert len(result["action"]) == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_the_policy_acts_on_cuda_as_on_the_cpu(debug_run, episodes):
    cpu, cuda = drq.load_policy(debug_run.run_dir), drq.load_policy(debug_run.run_dir, device="cuda")
    assert cuda.device.type == "cuda"
    np.testing.assert_allclose(cuda.act_on_observation(episodes.observations), cpu.act_on_observation(
        episodes.observations), rtol=0, atol=2e-3)  # TF32 convolutions on the GPU  # fmt: skip
    on_gpu = cuda.act_on_observation(torch.from_numpy(episodes.observations).cuda())
    assert on_gpu.device.type == "cuda"
