"""Replay checked against a brute-force reference on frames whose pixels encode (episode, step).

The reference keeps a plain Python list of every step ever added and recomputes, with loops, which transitions
exist and what their stacks, n-step rewards and discounts must be. Nothing in it shares code with replay/.
"""

from __future__ import annotations

import io
from collections import Counter

import numpy as np
import pytest
import torch

from replay import Batch, FrameReplay

FRAME = (3, 2, 2)
ACTION = (2,)


def encode(ep: int, step: int) -> np.ndarray:
    """A frame whose pixels spell (episode, step): channel 0 = episode, 1 = step, 2 = 7 (marker)."""
    f = np.empty(FRAME, dtype=np.uint8)
    f[0], f[1], f[2] = ep, step, 7
    return f


def decode_stack(obs: np.ndarray, k: int) -> list[tuple[int, int]]:
    """(k*3, H, W) -> [(episode, step)] oldest first; checks that every pixel of a frame agrees."""
    out = []
    for j in range(k):
        f = obs[3 * j : 3 * j + 3]
        assert (f[2] == 7).all()
        assert (f[0] == f[0, 0, 0]).all() and (f[1] == f[1, 0, 0]).all()
        out.append((int(f[0, 0, 0]), int(f[1, 0, 0])))
    return out


class Reference:
    """Brute-force model of what the replay must hold."""

    def __init__(self, capacity: int, k: int, n: int, gamma: float):
        self.k, self.n, self.gamma = k, n, gamma
        self.slots = capacity + n + k - 1
        self.steps: list[dict] = []  # global order

    def add(self, **step):
        self.steps.append(step)

    def index(self):
        return {(s["ep"], s["t"]): g for g, s in enumerate(self.steps)}

    def transitions(self) -> dict[tuple[int, int], dict]:
        """All sampleable transitions keyed by (episode, step), with their expected contents."""
        total = len(self.steps)
        idx = self.index()
        out = {}
        for g, s in enumerate(self.steps):
            if s["last"]:
                continue
            ep, t = s["ep"], s["t"]
            # oldest frame of the stack must still be stored
            oldest = idx[(ep, max(t - self.k + 1, 0))]
            if oldest < total - self.slots:
                continue
            # walk the window
            reward, disc, m = 0.0, 1.0, 0
            complete = False
            for i in range(1, self.n + 1):
                nxt = idx.get((ep, t + i))
                if nxt is None:
                    break  # not written yet
                st = self.steps[nxt]
                reward += disc * st["reward"]
                disc *= self.gamma * st["discount"]
                m = i
                if st["last"] or i == self.n:
                    complete = True
                    break
            if not complete:
                continue
            out[(ep, t)] = {
                "obs": [(ep, max(t - j, 0)) for j in range(self.k - 1, -1, -1)],
                "next_obs": [(ep, max(t + m - j, 0)) for j in range(self.k - 1, -1, -1)],
                "action": self.steps[idx[(ep, t + 1)]]["action"],
                "reward": reward,
                "discount": disc,
            }
        return out


def fill(buf: FrameReplay, ref: Reference, rng: np.random.Generator, episodes: int, finish_last: bool = False):
    """Add random episodes (lengths 1..9 steps after the first, random rewards, some zero discounts)."""
    start_ep = (ref.steps[-1]["ep"] + 1) if ref.steps else 0
    for ep in range(start_ep, start_ep + episodes):
        length = int(rng.integers(1, 10))
        ends = ep < start_ep + episodes - 1 or finish_last
        for t in range(length + 1):
            first, last = t == 0, ends and t == length
            action = rng.uniform(-1, 1, ACTION).astype(np.float32)
            reward = 0.0 if first else float(rng.uniform(0, 2))
            discount = 1.0 if first else float(rng.choice([1.0, 1.0, 1.0, 0.0]) if last else 1.0)
            buf.add(encode(ep, t), action, reward, discount, first, last)
            ref.add(ep=ep, t=t, action=action, reward=reward, discount=discount, last=last)


def check_against_reference(buf: FrameReplay, ref: Reference, draws: int = 4000):
    expected = ref.transitions()
    assert len(buf) == len(expected)
    batch = buf.sample(draws)
    assert isinstance(batch, Batch)
    k = buf.frame_stack
    assert batch.obs.shape == (draws, 3 * k, 2, 2) and batch.obs.dtype == torch.uint8
    assert batch.reward.shape == (draws, 1) and batch.discount.shape == (draws, 1)
    assert batch.action.dtype == torch.float32
    seen = Counter()
    # one conversion per field, then plain-python checks per draw (pytest.approx's tolerances written out: it is
    # max(rel * |expected|, abs), abs 1e-12 by default; the action must be bit-equal)
    all_obs, all_next = batch.obs.numpy(), batch.next_obs.numpy()
    actions, rewards, discounts = batch.action.numpy(), batch.reward[:, 0].tolist(), batch.discount[:, 0].tolist()
    for i in range(draws):
        obs = decode_stack(all_obs[i], k)
        key = obs[-1]
        assert key in expected, f"sampled a transition that must not exist: {key}"
        want = expected[key]
        assert obs == want["obs"]
        assert decode_stack(all_next[i], k) == want["next_obs"]
        assert np.array_equal(actions[i], want["action"]), (i, actions[i], want["action"])
        assert abs(rewards[i] - want["reward"]) <= max(1e-5 * abs(want["reward"]), 1e-5), (i, rewards[i], want)
        assert abs(discounts[i] - want["discount"]) <= max(1e-6 * abs(want["discount"]), 1e-12), (i, discounts[i])
        seen[key] += 1
    # uniform over all sampleable transitions: every one is drawn, none is grossly over-represented
    assert set(seen) == set(expected)
    mean = draws / len(expected)
    assert max(seen.values()) < mean * 3 + 10


@pytest.mark.parametrize("k,n", [(3, 3), (1, 1), (3, 1), (2, 5)])
def test_matches_brute_force_without_eviction(k, n):
    rng = np.random.default_rng(k * 10 + n)
    buf = FrameReplay(10_000, FRAME, ACTION, frame_stack=k, nstep=n, discount=0.9, seed=1)
    ref = Reference(10_000, k, n, 0.9)
    fill(buf, ref, rng, episodes=25)  # the last episode is in progress
    check_against_reference(buf, ref)


@pytest.mark.parametrize("capacity,k,n", [(17, 3, 3), (40, 3, 1), (23, 2, 4)])
def test_matches_brute_force_after_eviction(capacity, k, n):
    rng = np.random.default_rng(capacity)
    buf = FrameReplay(capacity, FRAME, ACTION, frame_stack=k, nstep=n, discount=0.95, seed=2)
    ref = Reference(capacity, k, n, 0.95)
    for _ in range(6):  # wrap the ring several times, checking each time at a different phase
        fill(buf, ref, rng, episodes=int(rng.integers(3, 9)))
        check_against_reference(buf, ref, draws=1500)


def test_full_ring_keeps_capacity_transitions():
    """With one long episode, exactly `capacity` transitions are sampleable once the ring is full."""
    k, n, cap = 3, 3, 50
    buf = FrameReplay(cap, FRAME, ACTION, frame_stack=k, nstep=n)
    for t in range(200):
        buf.add(encode(0, t % 256), np.zeros(2, np.float32), 1.0, 1.0, t == 0, False)
    assert len(buf) == cap


def test_episode_in_progress_and_window_truncation():
    buf = FrameReplay(100, FRAME, ACTION, frame_stack=3, nstep=3, discount=0.5)
    a = np.zeros(2, np.float32)
    buf.add(encode(0, 0), a, 0.0, 1.0, True, False)
    assert len(buf) == 0
    with pytest.raises(ValueError, match="no complete transition"):
        buf.sample(4)
    for t in (1, 2):
        buf.add(encode(0, t), a, 1.0, 1.0, False, False)
    assert len(buf) == 0  # a 3-step window from step 0 needs step 3
    buf.add(encode(0, 3), a, 1.0, 1.0, False, False)
    assert len(buf) == 1
    # ending the episode at step 4 makes the truncated windows from steps 2 and 3 complete
    buf.add(encode(0, 4), a, 1.0, 0.0, False, True)
    assert len(buf) == 4
    batch = buf.gather(np.array([3]))
    assert batch.reward.item() == pytest.approx(1.0)
    assert batch.discount.item() == pytest.approx(0.0)  # terminal discount
    assert decode_stack(batch.next_obs[0].numpy(), 3) == [(0, 2), (0, 3), (0, 4)]
    batch = buf.gather(np.array([0]))
    assert batch.reward.item() == pytest.approx(1 + 0.5 + 0.25)
    assert batch.discount.item() == pytest.approx(0.125)
    assert decode_stack(batch.obs[0].numpy(), 3) == [(0, 0), (0, 0), (0, 0)]


def test_state_dict_round_trip_is_weights_only_and_exact():
    rng = np.random.default_rng(0)
    buf = FrameReplay(30, FRAME, ACTION, frame_stack=3, nstep=2, discount=0.9, seed=5)
    ref = Reference(30, 3, 2, 0.9)
    fill(buf, ref, rng, episodes=12)
    raw = io.BytesIO()
    torch.save(buf.state_dict(), raw)
    raw.seek(0)
    state = torch.load(raw, weights_only=True)
    other = FrameReplay(30, FRAME, ACTION, frame_stack=3, nstep=2, discount=0.9, seed=99)
    other.load_state_dict(state)
    assert len(other) == len(buf)
    a, b = buf.sample(64), other.sample(64)  # same sampler state -> same batch
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    # and both keep working identically after more data
    for r in (buf, other):
        r.add(encode(200, 0), np.zeros(2, np.float32), 0.0, 1.0, True, False)
    assert len(other) == len(buf)


def test_load_rejects_mismatched_config():
    buf = FrameReplay(30, FRAME, ACTION, frame_stack=3, nstep=2)
    other = FrameReplay(30, FRAME, ACTION, frame_stack=3, nstep=3)
    with pytest.raises(ValueError, match="nstep"):
        other.load_state_dict(buf.state_dict())


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(capacity=0), "capacity.*0"),
        (dict(capacity=-5), "capacity.*-5"),
        (dict(nstep=0), "nstep.*0"),
        (dict(frame_stack=0), "frame_stack.*0"),
        (dict(discount=1.5), "discount.*1.5"),
        (dict(frame_shape=(84, 84)), r"frame_shape.*\(84, 84\)"),
    ],
)
def test_bad_construction(kwargs, match):
    base = dict(capacity=10, frame_shape=FRAME, action_shape=ACTION)
    base.update(kwargs)
    with pytest.raises(ValueError, match=match):
        FrameReplay(**base)


def test_bad_add():
    buf = FrameReplay(10, FRAME, ACTION)
    a = np.zeros(2, np.float32)
    with pytest.raises(ValueError, match="float32"):
        buf.add(encode(0, 0).astype(np.float32), a, 0.0, 1.0, True, False)
    with pytest.raises(ValueError, match=r"\(3, 3, 2\)"):
        buf.add(np.zeros((3, 3, 2), np.uint8), a, 0.0, 1.0, True, False)
    with pytest.raises(ValueError, match=r"action has shape \(3,\)"):
        buf.add(encode(0, 0), np.zeros(3, np.float32), 0.0, 1.0, True, False)
    with pytest.raises(ValueError, match="first=True"):
        buf.add(encode(0, 0), a, 0.0, 1.0, False, False)
    with pytest.raises(ValueError, match="nan"):
        buf.add(encode(0, 0), a, float("nan"), 1.0, True, False)
    buf.add(encode(0, 0), a, 0.0, 1.0, True, True)
    with pytest.raises(ValueError, match="first=True"):
        buf.add(encode(0, 1), a, 0.0, 1.0, False, False)
    with pytest.raises(ValueError, match="batch_size"):
        buf.sample(0)


def test_recycled_batches_are_never_overwritten_while_held():
    """Output tensors are pooled for speed; a batch (or a view of it) that is still held must stay intact."""
    rng = np.random.default_rng(3)
    buf = FrameReplay(1000, FRAME, ACTION, frame_stack=3, nstep=2, seed=4)
    ref = Reference(1000, 3, 2, 0.99)
    fill(buf, ref, rng, episodes=40)
    held = buf.sample(32)
    view = buf.sample(32).next_obs[3:5]  # only a view of the second batch survives
    snapshot_held, snapshot_view = held.obs.clone(), view.clone()
    for _ in range(10):
        buf.sample(32)
    assert torch.equal(held.obs, snapshot_held)
    assert torch.equal(view, snapshot_view)
    fresh = buf.sample(32)
    assert fresh.obs.data_ptr() not in (held.obs.data_ptr(), view.data_ptr())


def test_incremental_len_matches_recount_at_every_step():
    rng = np.random.default_rng(11)
    buf = FrameReplay(13, FRAME, ACTION, frame_stack=3, nstep=3)
    ep = 0
    for _ in range(300):
        length = int(rng.integers(1, 7))
        for t in range(length + 1):
            buf.add(encode(ep % 256, t), np.zeros(2, np.float32), 1.0, 1.0, t == 0, t == length and rng.random() < 0.8)
            assert len(buf) == buf._count_valid()
            if buf._last[(buf._total - 1) % buf.num_slots]:
                break
        else:
            # an episode cut short without last=True: the next one starts anyway
            pass
        ep += 1
