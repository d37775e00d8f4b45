"""A replay buffer that stores every frame once and builds stacks and n-step returns at sample time.

Why: facebookresearch/drqv2 stores stacked observations (9x84x84 bytes) for obs *and* next_obs inside
DataLoader workers: 63.5 KB per transition. Here each environment frame (3x84x84 uint8 = 21,168 B) is written
once into a ring, with a few bytes of metadata; a transition costs ~21.2 KB.

Layout (logical index ``g`` counts every ``add`` call since the buffer was created; slot = g mod num_slots):

=============  ==================================================================================
``frame[g]``   the newest frame of time step g, uint8 ``frame_shape`` (C, H, W)
``action[g]``  the action that *led to* time step g (ignored for an episode's first step)
``reward[g]``  the reward received on arriving at step g (summed over action repeat by the env)
``discount[g]`` the environment's discount on arriving at step g (DMC: 1.0, 0.0 on true terminals)
``t[g]``       index of step g inside its episode (0 for ``first``)
``last[g]``    whether step g ends its episode
=============  ==================================================================================

A transition starts at step g and consists of (all in agent steps, with k = ``frame_stack``, n = ``nstep``)::

    obs      = frames g-k+1 .. g          (indices before the episode's start repeat its first frame)
    action   = action[g+1]
    m        = min(n, steps until the episode's last step)
    reward   = sum_{i=1..m} (prod_{j<i} gamma * discount[g+j]) * reward[g+i]
    discount = prod_{i=1..m} gamma * discount[g+i]            (= gamma^m x product of env discounts)
    next_obs = frames g+m-k+1 .. g+m      (same first-frame padding)

This is the n-step return of DrQ-v2 (``replay_buffer.py``), and with n = 1 the ordinary one-step transition.
A transition is sampleable when steps g+1..g+m have been written and belong to g's episode, the window is
complete (m = n, or it reaches the episode's last step), and none of the frames it reads has been evicted.
So the episode in progress can be sampled, stacks and windows never mix episodes, and eviction of the oldest
frames never produces a stack that borrows a frame from the next occupant of a slot.

Sampling is uniform over sampleable transitions (vectorised rejection sampling on the host-side metadata);
frames are gathered on the storage device with one ``index_select``.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch


class Batch(NamedTuple):
    """A batch of B transitions, all tensors on the replay's storage device.

    obs:      uint8   (B, k*C, H, W)  stacked frames, oldest first
    action:   float32 (B, A)
    reward:   float32 (B, 1)          n-step discounted reward sum
    discount: float32 (B, 1)          gamma^m x product of env discounts over the window
    next_obs: uint8   (B, k*C, H, W)
    """

    obs: torch.Tensor
    action: torch.Tensor
    reward: torch.Tensor
    discount: torch.Tensor
    next_obs: torch.Tensor


def allocate_file(path: Path, nbytes: int) -> None:
    """Create ``path`` (a new file in place of any earlier one, whose contents are scratch) with ``nbytes`` of disk
    blocks allocated (``posix_fallocate``). A memory-mapped write into a hole of a sparse file on a full disk is a
    SIGBUS that kills the process without a word; with the blocks allocated now, a disk too small is this OSError
    (its ``filename`` set), and a disk filled later by someone else cannot fail a write into the file. On a file
    system that cannot allocate without writing (NFS before v4.2), glibc writes the file once; copy-on-write ones
    (btrfs, ZFS) may still need new blocks when a slot is written again."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)  # a new file: a memory map of the old one elsewhere keeps its own pages
        with open(path, "wb") as f:
            if hasattr(os, "posix_fallocate"):
                os.posix_fallocate(f.fileno(), 0, nbytes)
            else:  # macOS: sparse
                f.truncate(nbytes)
    except OSError as error:
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)
        raise OSError(error.errno, error.strerror, str(path)) from None


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


class FrameReplay:
    """Ring buffer of single uint8 frames; k-frame stacks and n-step returns are built when sampling.

    Args:
        capacity: number of transitions kept (>= 1). Internally ``capacity + nstep + frame_stack - 1`` frame slots
            are allocated, so that ``capacity`` transitions stay sampleable once the ring is full.
        frame_shape: shape of one frame, channels first, e.g. ``(3, 84, 84)``.
        action_shape: e.g. ``(6,)``.
        frame_stack: k, frames per observation (>= 1).
        nstep: n, steps per return (>= 1).
        discount: gamma in [0, 1].
        device: where frames live ("cpu", "cuda", ...) and where batches are returned. Metadata stays on the host.
        seed: seed of the sampler's random generator.
        frames_file: None (frames in memory on ``device``) or a path: the frames then live in a memory-mapped file
            there (``num_slots`` x C x H x W bytes, its blocks allocated when it is created: :func:`allocate_file`;
            the page cache holds what RAM allows) and batches are gathered on the host, then moved to ``device``. Its
            contents are scratch: a resume rebuilds them. Raises OSError naming it where it cannot be created.
    """

    def __init__(
        self,
        capacity: int,
        frame_shape: tuple[int, ...],
        action_shape: tuple[int, ...],
        frame_stack: int = 3,
        nstep: int = 3,
        discount: float = 0.99,
        device: str | torch.device = "cpu",
        seed: int = 0,
        frames_file: str | Path | None = None,
    ) -> None:
        self.capacity = _positive_int("capacity", capacity)
        self.frame_stack = _positive_int("frame_stack", frame_stack)
        self.nstep = _positive_int("nstep", nstep)
        frame_shape = tuple(frame_shape)
        if len(frame_shape) != 3 or not all(isinstance(d, (int, np.integer)) and d > 0 for d in frame_shape):
            raise ValueError(f"frame_shape must be (C, H, W) with positive sizes, got {frame_shape!r}")
        self.frame_shape = tuple(int(d) for d in frame_shape)
        action_shape = tuple(action_shape)
        if not all(isinstance(d, (int, np.integer)) and d > 0 for d in action_shape):
            raise ValueError(f"action_shape must hold positive sizes, got {action_shape!r}")
        self.action_shape = tuple(int(d) for d in action_shape)
        if not 0.0 <= float(discount) <= 1.0:
            raise ValueError(f"discount must be in [0, 1], got {discount!r}")
        self.gamma = float(discount)
        self.device = torch.device(device)

        self.num_slots = self.capacity + self.nstep + self.frame_stack - 1
        s = self.num_slots
        self.frames_file = None if frames_file is None else Path(frames_file)
        if self.frames_file is None:
            # empty, not zeros: memory is committed only as frames arrive (1M frames = 21 GB virtual until written)
            self._frames = torch.empty((s, *self.frame_shape), dtype=torch.uint8, device=self.device)
        else:  # every block allocated now, pages cached as RAM allows
            allocate_file(self.frames_file, s * int(np.prod(self.frame_shape)))
            self._mapped = np.memmap(self.frames_file, dtype=np.uint8, mode="r+", shape=(s, *self.frame_shape))
            self._frames = torch.from_numpy(self._mapped)
        self._action = np.zeros((s, *self.action_shape), dtype=np.float32)
        self._reward = np.zeros(s, dtype=np.float32)
        self._discount = np.zeros(s, dtype=np.float32)
        self._t = np.zeros(s, dtype=np.int32)
        self._last = np.zeros(s, dtype=bool)
        self._total = 0  # number of add() calls ever; logical indices [total - num_slots, total) are stored
        self._rng = np.random.default_rng(seed)
        self._len = 0  # sampleable transitions, maintained incrementally by add()
        self._out_pool: list[np.ndarray] = []  # recycled output memory (CPU), see _output_buffer

    def _output_buffer(self, num_frames: int) -> torch.Tensor:
        """An uninitialised (num_frames, C, H, W) uint8 tensor, recycled when nobody else holds it.

        A fresh 32 MB tensor per batch costs ~8k page faults (3-20 ms on a 2-core CPU, more than the gather itself).
        On the CPU the pool keeps numpy views of its tensors and hands out ``torch.from_numpy`` tensors of them: such a
        tensor's storage holds a Python reference to its array until the last tensor sharing that storage (the batch,
        any view of it, ``.numpy()`` of a view) is gone. An array is reused only when ``sys.getrefcount`` shows no
        such reference, so recycling never overwrites data a caller still holds. Other devices allocate afresh (their
        caching allocators already recycle without page faults).
        """
        if self.device.type != "cpu":
            return torch.empty((num_frames, *self.frame_shape), dtype=torch.uint8, device=self.device)
        for memory in self._out_pool:
            # references: the pool's list, this loop's name and getrefcount's argument; a live tensor adds one
            if memory.shape[0] == num_frames and sys.getrefcount(memory) <= 3:
                return torch.from_numpy(memory)
        # torch allocates it (huge-page aligned under THP_MEM_ALLOC_ENABLE); the array view is what the pool counts
        memory = torch.empty((num_frames, *self.frame_shape), dtype=torch.uint8).numpy()
        if len(self._out_pool) < 4:
            self._out_pool = [m for m in self._out_pool if m.shape[0] == num_frames] + [memory]
        return torch.from_numpy(memory)

    # ------------------------------------------------------------------ writing
    def add(self, frame: Any, action: Any, reward: float, discount: float, first: bool, last: bool) -> None:
        """Append one time step. ``frame`` is the newest frame (C, H, W) uint8, numpy or torch.

        ``action`` is the action that led to this step (any value on ``first`` steps), ``reward`` and
        ``discount`` those received on arriving here.
        """
        frame_t = self._check_frame(frame)
        action_a = np.asarray(action)
        if action_a.shape != self.action_shape:
            raise ValueError(f"action has shape {action_a.shape}, expected {self.action_shape}")
        if not np.issubdtype(action_a.dtype, np.floating):
            raise ValueError(f"action has dtype {action_a.dtype}, expected a floating dtype (float32)")
        reward_f, discount_f = float(reward), float(discount)
        if not np.isfinite(reward_f):
            raise ValueError(f"reward must be finite, got {reward!r}")
        if not 0.0 <= discount_f <= 1.0:
            raise ValueError(f"discount must be in [0, 1], got {discount!r}")
        if first:
            t = 0
        else:
            if self._total == 0:
                raise ValueError("the first step added to an empty replay must have first=True")
            prev = (self._total - 1) % self.num_slots
            if self._last[prev]:
                raise ValueError("the step after an episode's last step must have first=True")
            t = int(self._t[prev]) + 1
        # Only transitions starting in `affected` can change validity with this add: those whose window reaches
        # the new step, and those whose oldest stacked frame is evicted by it. Keeps len() O(1) per add.
        total, s = self._total, self.num_slots
        affected = np.unique(np.concatenate([np.arange(total - s, total - s + self.frame_stack),
                                             np.arange(total - self.nstep, total)]))
        affected = affected[affected >= 0]
        valid_before = int(self._windows(affected)[1].sum()) if affected.size else 0
        i = self._total % self.num_slots
        self._frames[i].copy_(frame_t, non_blocking=False)
        self._action[i] = action_a
        self._reward[i] = reward_f
        self._discount[i] = discount_f
        self._t[i] = t
        self._last[i] = bool(last)
        self._total += 1
        if affected.size:
            self._len += int(self._windows(affected)[1].sum()) - valid_before

    def truncate_episode(self) -> None:
        """End the episode in progress at its newest step, as a truncation: that step becomes its episode's last
        (``last[g] = True``) with its discount unchanged, so the windows that reach it stop there and bootstrap from
        its frames (a terminal would be discount 0). Nothing else changes; the next step added must have
        ``first=True``. For an episode cut short by a failing environment, whose next step never came. A no-op when
        the replay is empty or its newest step already ends its episode.

        Only the transitions whose window reaches the newest step (starting ``nstep`` steps back or later) change,
        so ``len()`` stays exact in O(nstep)."""
        if self._total == 0 or self._last[(self._total - 1) % self.num_slots]:
            return
        newest = self._total - 1
        affected = np.arange(max(newest - self.nstep, self._total - self.num_slots, 0), newest + 1)
        valid_before = int(self._windows(affected)[1].sum())
        self._last[newest % self.num_slots] = True
        self._len += int(self._windows(affected)[1].sum()) - valid_before

    def _check_frame(self, frame: Any) -> torch.Tensor:
        if isinstance(frame, np.ndarray):
            if frame.dtype != np.uint8:
                raise ValueError(f"frame has dtype {frame.dtype}, expected uint8")
            frame = torch.from_numpy(np.ascontiguousarray(frame))
        elif isinstance(frame, torch.Tensor):
            if frame.dtype != torch.uint8:
                raise ValueError(f"frame has dtype {frame.dtype}, expected torch.uint8")
        else:
            raise ValueError(f"frame must be a numpy array or torch tensor, got {type(frame).__name__}")
        if tuple(frame.shape) != self.frame_shape:
            raise ValueError(f"frame has shape {tuple(frame.shape)}, expected {self.frame_shape} (one frame, C x H x W)")
        return frame

    # ------------------------------------------------------------------ reading
    def _windows(self, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For start indices g (logical), return (m, valid): window length and whether the transition exists."""
        n, s, total = self.nstep, self.num_slots, self._total
        offsets = np.arange(1, n + 1)
        win = g[:, None] + offsets[None, :]  # (N, n) logical indices g+1..g+n
        in_range = win < total
        slots = win % s
        t0 = self._t[g % s]
        same_episode = in_range & (self._t[slots] == t0[:, None] + offsets[None, :])
        # m = first i with last[g+i] (within the same episode), else n.
        ends = same_episode & self._last[slots]
        has_end = ends.any(axis=1)
        m = np.where(has_end, ends.argmax(axis=1) + 1, n)
        # every step g+1..g+m must be written and in g's episode
        reach = same_episode.cumprod(axis=1).sum(axis=1)  # count of leading in-episode steps
        valid = (reach >= m) & ~self._last[g % s]
        # the oldest frame read by obs must not be evicted
        oldest_needed = g - np.minimum(t0, self.frame_stack - 1)
        valid &= oldest_needed >= total - s
        valid &= g >= 0
        return m, valid

    def __len__(self) -> int:
        """Number of transitions that can be sampled now (kept up to date by ``add``, O(1))."""
        return self._len

    def _count_valid(self) -> int:
        """Recount sampleable transitions from scratch (O(num_slots))."""
        g = np.arange(max(0, self._total - self.num_slots), self._total)
        return int(self._windows(g)[1].sum()) if g.size else 0

    def _sample(self, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """``(g, m)``: start indices and their window lengths, drawn by rejection sampling."""
        batch_size = _positive_int("batch_size", batch_size)
        lo = max(0, self._total - self.num_slots)
        if len(self) == 0:
            raise ValueError(
                f"cannot sample: the replay holds no complete transition yet ({self._total} steps added, "
                f"nstep={self.nstep})"
            )
        chosen: list[tuple[np.ndarray, np.ndarray]] = []
        need = batch_size
        while need > 0:
            g = self._rng.integers(lo, self._total, size=2 * need + 8)
            m, valid = self._windows(g)
            chosen.append((g[valid][:need], m[valid][:need]))
            need -= len(chosen[-1][0])
        return np.concatenate([c[0] for c in chosen]), np.concatenate([c[1] for c in chosen])

    def sample(self, batch_size: int) -> Batch:
        """Draw ``batch_size`` transitions uniformly from all sampleable ones. See the module docstring."""
        return self._gather(*self._sample(batch_size))

    def gather(self, g: np.ndarray) -> Batch:
        """Build the transitions that start at logical indices ``g`` (each must be sampleable)."""
        g = np.asarray(g, dtype=np.int64)
        m, valid = self._windows(g)
        if not valid.all():
            raise ValueError(f"indices {g[~valid][:5].tolist()} are not sampleable transitions")
        return self._gather(g, m)

    def _gather(self, g: np.ndarray, m: np.ndarray) -> Batch:
        """Transitions starting at sampleable ``g`` with window lengths ``m`` (from ``_windows``)."""
        s, k, n = self.num_slots, self.frame_stack, self.nstep
        nxt = g + m
        back = np.arange(k - 1, -1, -1)  # k-1 .. 0 frames back, oldest first
        t_obs = self._t[g % s]
        t_nxt = self._t[nxt % s]
        obs_idx = g[:, None] - np.minimum(back[None, :], t_obs[:, None])
        nxt_idx = nxt[:, None] - np.minimum(back[None, :], t_nxt[:, None])

        # n-step reward and discount, vectorised over the window
        offsets = np.arange(1, n + 1)
        win_slots = (g[:, None] + offsets[None, :]) % s
        inside = offsets[None, :] <= m[:, None]
        step_disc = np.where(inside, self.gamma * self._discount[win_slots], 1.0)
        step_rew = np.where(inside, self._reward[win_slots], 0.0)
        disc_before = np.cumprod(np.concatenate([np.ones((len(g), 1)), step_disc[:, :-1]], axis=1), axis=1)
        reward = (disc_before * step_rew).sum(axis=1, dtype=np.float64).astype(np.float32)
        discount = np.prod(step_disc, axis=1).astype(np.float32)
        action = self._action[(g + 1) % s]

        idx = np.concatenate([obs_idx, nxt_idx], axis=1) % s  # (B, 2k)
        b = len(g)
        if self._frames.device == self.device:
            idx_t = torch.from_numpy(idx.reshape(-1)).to(self.device, non_blocking=True)
            frames = torch.index_select(self._frames, 0, idx_t, out=self._output_buffer(2 * k * b))  # (B*2k, C, H, W)
        else:  # frames memory-mapped on the host, batches on an accelerator
            frames = torch.index_select(self._frames, 0, torch.from_numpy(idx.reshape(-1))).to(self.device)
        c, h, w = self.frame_shape
        frames = frames.view(b, 2, k * c, h, w)
        to = dict(device=self.device, non_blocking=True)
        return Batch(
            obs=frames[:, 0],
            action=torch.from_numpy(action).to(**to),
            reward=torch.from_numpy(reward).unsqueeze(1).to(**to),
            discount=torch.from_numpy(discount).unsqueeze(1).to(**to),
            next_obs=frames[:, 1],
        )

    # ------------------------------------------------------------------ persistence
    @property
    def storage(self) -> str:
        """``"ram"`` (frames in memory on ``device``) or ``"disk"`` (frames in ``frames_file``, memory-mapped)."""
        return "ram" if self.frames_file is None else "disk"

    @property
    def total(self) -> int:
        """Time steps added since the buffer was created; logical indices ``[total - num_slots, total)`` are held."""
        return self._total

    def export_range(self, start: int, stop: int) -> dict[str, np.ndarray]:
        """Logical indices ``[start, stop)`` (all held now) as host arrays: ``frames`` (N, C, H, W) uint8, ``action``,
        ``reward``, ``discount``, ``t``, ``last``. A view of the storage where it is one contiguous host run, else a
        copy of these N frames only (``device=cuda``: one host copy of N frames, never of the whole buffer)."""
        if not max(0, self._total - self.num_slots) <= start <= stop <= self._total:
            raise ValueError(f"[{start}, {stop}) is not held (held: [{max(0, self._total - self.num_slots)}, "
                             f"{self._total}))")
        s = self.num_slots
        lo = start % s
        if stop - start <= s - lo:  # one run of slots
            slots: slice | np.ndarray = slice(lo, lo + stop - start)
            frames = self._frames[slots]
        else:
            slots = np.arange(start, stop) % s
            frames = self._frames[torch.from_numpy(slots).to(self._frames.device)]
        frames = frames.cpu().numpy() if frames.device.type != "cpu" else frames.numpy()
        return {"frames": frames, "action": self._action[slots], "reward": self._reward[slots],
                "discount": self._discount[slots], "t": self._t[slots], "last": self._last[slots]}

    def import_range(self, start: int, arrays: dict[str, np.ndarray]) -> None:
        """Write ``arrays`` (as from :meth:`export_range`) at logical indices ``start ..`` into their slots; used by a
        resume before :meth:`restore_position`. Writes nothing else."""
        n, s = len(arrays["frames"]), self.num_slots
        frames = torch.from_numpy(np.ascontiguousarray(arrays["frames"])).to(self._frames.device)
        if n <= s - start % s:  # one run of slots
            slots: slice | np.ndarray = slice(start % s, start % s + n)
            self._frames[slots].copy_(frames)
        else:
            slots = np.arange(start, start + n) % s
            self._frames[torch.from_numpy(slots).to(self._frames.device)] = frames
        for name in ("action", "reward", "discount", "t", "last"):
            getattr(self, f"_{name}")[slots] = arrays[name]

    def restore_position(self, total: int, rng_state: dict[str, Any]) -> None:
        """After :meth:`import_range` filled the held slots: set the step count and the sampler's RNG state."""
        self._total = int(total)
        self._rng.bit_generator.state = rng_state
        self._len = self._count_valid()

    def rng_state(self) -> dict[str, Any]:
        """The sampler's random generator state (plain values)."""
        return self._rng.bit_generator.state

    @property
    def nbytes(self) -> int:
        """Bytes of storage held (frames + metadata)."""
        meta = self._action.nbytes + self._reward.nbytes + self._discount.nbytes + self._t.nbytes + self._last.nbytes
        return self._frames.numel() * self._frames.element_size() + meta

    def state_dict(self) -> dict[str, Any]:
        """Contents as torch tensors and plain Python values (``torch.load(weights_only=True)`` safe).

        Only the slots written so far are included, so an early snapshot stays small.
        """
        used = min(self._total, self.num_slots)
        return {
            "config": self.state_dict_config(),
            "total": self._total,
            "frames": self._frames[:used].cpu().clone(),
            "action": torch.from_numpy(self._action[:used].copy()),
            "reward": torch.from_numpy(self._reward[:used].copy()),
            "discount": torch.from_numpy(self._discount[:used].copy()),
            "t": torch.from_numpy(self._t[:used].copy()),
            "last": torch.from_numpy(self._last[:used].copy()),
            "rng": self._rng.bit_generator.state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore contents saved by :meth:`state_dict`; the buffer's configuration must match."""
        self.check_saved_config(state.get("config", {}))
        used = min(int(state["total"]), self.num_slots)
        if state["frames"].shape[0] != used:
            raise ValueError(f"replay state holds {state['frames'].shape[0]} frames, expected {used}")
        self._frames[:used].copy_(state["frames"].to(self.device))
        self._action[:used] = state["action"].numpy()
        self._reward[:used] = state["reward"].numpy()
        self._discount[:used] = state["discount"].numpy()
        self._t[:used] = state["t"].numpy()
        self._last[:used] = state["last"].numpy()
        self._total = int(state["total"])
        self._rng.bit_generator.state = state["rng"]
        self._len = self._count_valid()

    def check_saved_config(self, saved: Any) -> None:
        """Raise ValueError naming the differences if a saved replay's ``config`` is not this buffer's."""
        mine, theirs = self.state_dict_config(), dict(saved or {})
        if theirs != mine:
            diff = {k: (theirs.get(k), v) for k, v in mine.items() if theirs.get(k) != v}
            raise ValueError(f"replay state does not match this buffer (saved, current): {diff}")

    def state_dict_config(self) -> dict[str, Any]:
        return {
            "capacity": self.capacity,
            "frame_shape": list(self.frame_shape),
            "action_shape": list(self.action_shape),
            "frame_stack": self.frame_stack,
            "nstep": self.nstep,
            "discount": self.gamma,
        }
