"""Gymnasium episode ends, exactly: ``terminated`` never bootstraps, ``truncated`` (the env's time limit or
``max_episode_frames``) does, and a termination inside an action repeat ends the agent step there with the rewards up
to it; the replay's n-step returns and discounts never cross an episode's end.

The env (tests/gym_scripted.py ``ScriptedEnds``) ends its episodes at known frames: terminated and truncated at every
length from 1 to 18 frames (action repeat 3: inside a repeat and at its end; 1 to 6 agent steps: every offset of a
3-step window, and episodes shorter than it), and twice past ``max_episode_frames=30``, once terminating exactly there.
It runs through the adapter (``drq.envs.gym_pixels``, in its worker process) and the real trainer loop, with uniform
random actions (seed frames throughout: no update). Every transition the replay can hand out is compared with a
brute-force reference computed from the script alone, by loops over frames: the pictures encode (episode, frame,
action), so each sampled transition says where it starts and ends.
"""

from __future__ import annotations

import csv
import math
from collections import Counter

import numpy as np
import pytest
from conftest import compose_debug
from gym_scripted import ACTION_HIGH, ACTION_LOW, SCRIPT, action_code, reward

REPEAT, NSTEP, STACK, GAMMA, CAP = 3, 3, 2, 0.9, 30


def reference_episode(episode: int, end: str, length: int) -> list[tuple[int, float, float]]:
    """(frame index, reward, discount) of each agent step of one episode, step 0 being the reset: the frames of a step
    are the next ``REPEAT``, cut at the env's end (terminated: discount 0) or at ``CAP`` frames (discount 1)."""
    ends_itself = end != "none" and length <= CAP
    last_frame, terminal = (length, end == "term") if ends_itself else (CAP, False)
    steps = [(0, 0.0, 1.0)]
    for k in range(1, math.ceil(last_frame / REPEAT) + 1):
        frames = range((k - 1) * REPEAT + 1, min(k * REPEAT, last_frame) + 1)
        final = frames[-1] == last_frame
        steps.append((frames[-1], sum(reward(episode, f) for f in frames), 0.0 if final and terminal else 1.0))
    return steps


def reference_transitions() -> tuple[dict[tuple[int, int], dict], int, list[float]]:
    """Every transition by its start (episode, frame): n-step reward and discount (loops over the window, stopping at
    the episode's last step), the (episode, frame) of next_obs's newest picture and of each stacked picture; the
    run's frames; each episode's return."""
    out, frames, returns = {}, 0, []
    for e, (end, length) in enumerate(SCRIPT):
        steps = reference_episode(e, end, length)
        last = len(steps) - 1
        frames += last * REPEAT
        returns.append(sum(r for _, r, _ in steps))
        for t in range(last):  # a transition starts at every step but the last
            total, discount = 0.0, 1.0
            for i in range(1, NSTEP + 1):
                _, r, d = steps[t + i]
                total += discount * r
                discount *= GAMMA * d
                if t + i == last:
                    break
            m = i
            stack = [steps[max(t - j, 0)][0] for j in range(STACK - 1, -1, -1)]
            next_stack = [steps[max(t + m - j, 0)][0] for j in range(STACK - 1, -1, -1)]
            out[(e, steps[t][0])] = {"reward": total, "discount": discount, "m": m, "stack": stack,
                                     "next_stack": next_stack}  # fmt: skip
    return out, frames, returns


def decode(obs: np.ndarray) -> list[tuple[int, int, int]]:
    """(3k, H, W) -> [(episode, frame, action code)] of each stacked picture, oldest first (each uniform)."""
    out = []
    for j in range(STACK):
        picture = obs[3 * j: 3 * j + 3]
        assert (picture == picture[:, :1, :1]).all()
        out.append(tuple(int(v) for v in picture[:, 0, 0]))
    return out


@pytest.fixture(scope="module")
def scripted_run(tmp_path_factory):
    from drq.run import trainer

    reference, frames, returns = reference_transitions()
    cfg = compose_debug("task=gym", "gym.id=gym_scripted:ScriptedEnds", "gym.pixels=observation", "image_size=16",
                        f"action_repeat={REPEAT}", f"nstep={NSTEP}", f"frame_stack={STACK}", f"discount={GAMMA}",
                        f"max_episode_frames={CAP}", f"num_train_frames={frames}", f"num_seed_frames={frames}",
                        f"eval_every_frames={frames}", f"log_every_frames={frames}", f"histogram_every_frames={frames}",
                        f"snapshot_every_frames={frames}", "save_snapshot=false", "save_video=false",
                        "async_env=true", "eval_workers=1", "num_eval_episodes=1", "wandb.mode=disabled",
                        "replay_buffer_size=10000", base=("preset=debug",))  # fmt: skip
    run_dir = tmp_path_factory.mktemp("scripted")
    return trainer.run(cfg, run_dir, say=lambda s: None), run_dir, reference, returns


def test_every_replay_transition_matches_the_brute_force_reference(scripted_run):
    run, _, reference, _ = scripted_run
    replay = run.replay
    assert len(replay) == len(reference)  # no transition starts at a last step, none is missing
    seen: Counter = Counter()
    for _ in range(40):
        batch = replay.sample(256)
        obs, next_obs = batch.obs.numpy(), batch.next_obs.numpy()
        for b in range(len(obs)):
            stack, next_stack = decode(obs[b]), decode(next_obs[b])
            episode, frame, _ = stack[-1]
            want = reference[(episode, frame)]
            seen[(episode, frame)] += 1
            assert [f for e, f, _ in stack] == want["stack"] and {e for e, _, _ in stack} == {episode}
            assert [f for e, f, _ in next_stack] == want["next_stack"] and {e for e, _, _ in next_stack} == {episode}
            assert float(batch.reward[b, 0]) == pytest.approx(want["reward"], rel=1e-6), (episode, frame)
            assert float(batch.discount[b, 0]) == pytest.approx(want["discount"], rel=1e-6, abs=1e-7), (episode, frame)
            if want["m"] <= STACK - 1 or want["m"] == 1:  # the picture after the transition's action is in next_obs
                env_action = ACTION_LOW + (float(batch.action[b, 0]) + 1) / 2 * (ACTION_HIGH - ACTION_LOW)
                assert next_stack[STACK - want["m"]][2] == action_code(env_action)
    assert set(seen) == set(reference)  # every transition was drawn (and checked)
    terminal = [k for k, w in reference.items() if w["discount"] == 0.0]
    assert len(terminal) > 2 * 18  # windows that reach a termination: each bootstraps from nothing


def test_episode_returns_and_counts_are_the_scripts(scripted_run):
    _, run_dir, _, returns = scripted_run
    with open(run_dir / "train.csv") as f:
        rows = list(csv.DictReader(f))
    assert [float(r["episode_reward"]) for r in rows] == returns  # rewards summed up to the end, never past it
