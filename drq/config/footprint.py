"""What a run will hold in memory, estimated from its config before anything starts, and the machine rules that refuse
a run that cannot fit (one line each, exit 2: :data:`MACHINE_RULES`, at the end).

Pure arithmetic on the config plus a few reads of ``/proc`` and ``statvfs``: no torch import (except for
``device=cuda``, to ask the GPU), no environment, no allocation. Sizes are bytes; counts say their unit.

The estimate, for the end of the run (when the replay is fullest), is the sum of:

- **replay** (:func:`replay_bytes`): ``min(slots, adds) x bytes per slot``. ``replay.FrameReplay`` keeps
  ``replay_buffer_size + nstep + frame_stack - 1`` slots; each holds one uint8 frame ``3 x H x W`` plus
  ``4 A + 13`` bytes of metadata (action float32 x A, reward and discount float32, t int32, last bool). The run adds one
  slot per agent step plus one first step per episode: ``ceil(num_train_frames / action_repeat) + episodes``. On the
  CPU the frames are ``torch.empty``: RAM is committed only as frames arrive, but the whole capacity is *reserved* at
  once, and with ``vm.overcommit_memory=0`` Linux refuses one allocation larger than RAM + swap (measured here: a
  20 GB ``torch.empty`` succeeds, a 30 GB one fails on this 24.7 GB machine). On a GPU the whole capacity is allocated
  at once.
- **learner** (:func:`learner_bytes`): the process (python, torch, dm_control, hydra, wandb imports:
  ``PROCESS_BYTES``), the networks (16 bytes per trained parameter: weights, gradients and Adam's two moments, plus 4
  per target-critic parameter) and one update's batch and activations (``ACTIVATION_BYTES_PER_PIXEL`` per sample and
  per pixel of the H x W frame).
- **environments** (:func:`env_bytes`): the training env worker (``async_env=true``) and the eval workers
  (``eval_workers=K > 1``), ``ENV_PROCESS_BYTES`` each; an in-process env is inside ``PROCESS_BYTES``' margin.
- **video** (:func:`video_bytes`): the recorded episode's frames, ``video_size^2 x 3`` bytes each, plus ffmpeg.
- **snapshots**, on disk in the run dir (:func:`snapshot_bytes`): ``snapshot.pt`` and, with
  ``save_replay_in_snapshot``, the replay's segment files: by the end the steps held (all ``min(slots, adds)``), plus
  those the previous snapshot's files still hold until the next one is in place (:func:`segment_steps_on_disk`).

Measured on the 2-core AMD EPYC (Zen 3, family 25 model 1), 24.7 GB, torch 2.13.0 CPU, load 3-8 (other jobs), with
``python bench/footprint.py learner`` (peak VmHWM of a process that imports torch + drq.agents + replay, builds the
agent, fills a small FrameReplay and runs 3 updates, 2 torch threads) and ``python bench/footprint.py train --
<overrides>`` (the peak VmRSS of ``train.py`` and of each of its child processes, read every 0.3 s):

================================  ==========================================================================
imports (torch, drq.agents)       233 MB (every configuration)
debug trainer (48 px, B 16)       396 MB peak (``train.py preset=debug task=cartpole_balance``, eval_workers=2)
walker trainer (84 px, B 256)     1,992 MB peak (``train.py task=walker_walk num_train_frames=1000
                                  num_seed_frames=960 max_episode_frames=500 eval_every_frames=1000
                                  num_eval_episodes=2 eval_workers=2 replay_buffer_size=2000 save_snapshot=false``)
env worker process                259-260 MB each, cartpole 48 px; 277-278 MB, walker 84 px; both with 256 px video
                                  (train worker and eval workers); the GL probe at each worker's start, 170-236 MB,
                                  ends before the worker plays (and before the replay has grown)
drqv2 update, 84 px               +457 MB at B 128, +837 MB at B 256, +1,478 MB at B 512 (over the filled process):
                                  2.5-3.6 MB per sample = 355-505 B per pixel per sample, Adam's moments included
drqv2 update, 64 / 128 px         +453 MB at B 256 (432 B/px/sample), +991 MB at B 128 (472 B/px/sample)
sac update, 84 px, K = M = 2      +1,593 MB at B 256 (882 B/px/sample)
ffmpeg (256 px video)             28-61 MB
================================  ==========================================================================

Hence ``ACTIVATION_BYTES_PER_PIXEL``: drqv2 480 (one critic pass on obs and one on next_obs, the actor's pass), sac
240 per augmented pass (``num_critic_augs + num_target_augs`` of them), and ``PROCESS_BYTES`` = 1.0 GB: the walker
trainer's 1,992 MB peak minus its estimated networks (133 MB), batch (867 MB), replay (43 MB) and video (49 MB) is
0.90 GB (imports of torch, dm_control, hydra, wandb, cv2; freed memory glibc keeps, see ``drq/__init__.py``; the
in-process eval env where there is one), rounded up. The debug trainer (396 MB) is then overestimated by ~0.6 GB, the
walker one (estimated 2.0 GB) matched.
On a GPU the networks, the activations and the frames live in GPU memory, plus ``CUDA_CONTEXT_BYTES`` (not measured
here: no GPU was available to this helper; the usual CUDA context + cuDNN/cuBLAS workspaces).

What is compared, and with what (:class:`Machine`, read once per check):

- RAM: the estimate against :func:`drq.machine.memory.usable_ram_bytes` (``DRQ_MEMORY_LIMIT``, else the cgroup's
  headroom, else ``MemAvailable``); the replay's reservation against the allocation limit (RAM + swap with
  ``vm.overcommit_memory=0``, ``CommitLimit - Committed_AS`` with 2, none with 1; ``DRQ_MEMORY_LIMIT`` when set, so a
  machine made to look small looks small throughout).
- disk: the snapshots, and with ``replay_storage=disk`` (a memory-mapped frames file in the run dir, its frames out of
  RAM) the frames file, against :func:`drq.machine.memory.usable_disk_bytes` (``DRQ_DISK_LIMIT``, else the run dir's
  free space plus what its snapshots hold already); ``auto`` fits if either storage fits. A config without the key
  means ``ram``. A local sweep's jobs at once share the RAM and the disk.
- ``device=cuda`` (or ``auto`` where an NVIDIA device exists): GPU memory against
  :func:`drq.machine.memory.usable_gpu_bytes`.
- ``eval_workers``: at most ``max(8, 2 x cores)`` processes (:func:`max_eval_workers`).

A sweep sent to other machines (SLURM, a Ray cluster at an address) is not checked against this one
(``Machine.remote``); each job checks itself on its node when ``train.py`` starts it.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from drq.machine import memory
from drq.machine.memory import format_size

__all__ = ["Machine", "on_machine", "current_machine", "Footprint", "Problem", "footprint", "replay_adds",
           "replay_slots", "max_eval_workers", "memory_rule", "eval_workers_rule"]  # fmt: skip

PROCESS_BYTES = 1 * 10**9  # the trainer process without replay, networks, batch and video (measured 0.90 GB, above)
ENV_PROCESS_BYTES = 300 * 10**6  # one env worker process, train or eval (measured 259-278 MB, see above)
FFMPEG_BYTES = 100 * 10**6  # the video encoder process (measured 28-61 MB at 256 px)
CUDA_CONTEXT_BYTES = 1 * 10**9  # CUDA context and library workspaces on the GPU (not measured here)
ACTIVATION_BYTES_PER_PIXEL = {"drqv2": 480, "sac_per_pass": 240}  # per sample and per pixel of H x W (measured)
ACTION_DIM_BOUND = 56  # the widest action in the suite (humanoid_CMU); metadata is 4 A + 13 bytes per slot
META_BYTES_FIXED = 13  # reward, discount (float32), t (int32), last (bool) per slot
DEFAULT_EPISODE_FRAMES = 1000  # dm_control's time limit (episode_frames; the schema's nstep rule reads it too)
MAX_AUTO_EVAL_WORKERS = 8  # eval_workers=auto never starts more
WORKERS_PER_CORE = 2
SEGMENT_STEPS = 1000  # time steps per replay segment file (replay.segments.SEGMENT_STEPS: tests hold the two equal)


# ------------------------------------------------------------------------------------------------ the machine
@dataclass(frozen=True)
class Machine:
    """What the checks compare with (bytes; None: unknown, not checked)."""

    usable_ram: int | None  # RAM the run may use (drq.machine.memory.usable_ram_bytes)
    ram_source: str = "MemAvailable"  # where that figure comes from, in words
    allocation_limit: int | None = None  # the largest single allocation the kernel grants (None: no limit)
    allocation_source: str = ""
    cores: int = 1  # usable CPU cores
    disk_free: int | None = None  # bytes the run may write in its run dir (drq.machine.memory.usable_disk_bytes)
    disk_path: str = "."  # the run dir (its nearest existing parent)
    disk_source: str = "free"  # where disk_free comes from, in words
    gpu_free: Callable[[str], int | None] = field(default=lambda device: None)  # device -> free bytes (None: no CUDA)
    cuda_present: bool = False  # an NVIDIA GPU is visible (read without importing torch)
    remote: bool = False  # the run happens elsewhere: the checks are skipped
    jobs: int = 1  # runs of a local sweep at once, sharing usable_ram (already divided by them)
    error: str = ""  # a bad DRQ_MEMORY_LIMIT, reported by memory_rule as its one line

    @classmethod
    def here(cls, run_dir: str | Path | None = None, remote: bool = False, jobs: int = 1) -> "Machine":
        """This machine's facts; ``run_dir``: where the run will write (default: the working directory, where hydra's
        ``exp_local/`` goes), whose nearest existing parent gives the free disk space; ``jobs``: runs at once on this
        machine (a local sweep's parallel jobs), which share its RAM."""
        override = os.environ.get(memory.ENV_LIMIT)
        place = Path(run_dir if run_dir is not None else Path.cwd()).absolute()
        is_run_dir = run_dir is not None and place.is_dir()
        while not place.exists() and place != place.parent:
            place = place.parent
        try:
            usable = memory.usable_ram_bytes()
            disk_free = memory.usable_disk_bytes(place, is_run_dir=is_run_dir)
        except ValueError as bad:  # DRQ_MEMORY_LIMIT=lots, DRQ_DISK_LIMIT=lots
            return cls(usable_ram=None, error=str(bad), remote=remote, jobs=jobs)
        disk_override = os.environ.get(memory.ENV_DISK_LIMIT)
        disk_source = f"{memory.ENV_DISK_LIMIT}={disk_override}" if disk_override else "free"
        if override:
            source = f"{memory.ENV_LIMIT}={override}"
            limit, limit_source = usable, source
        else:
            source = "cgroup limit" if usable is not None and usable == memory._cgroup_headroom() else "MemAvailable"
            limit, limit_source = _allocation_limit()
        if jobs > 1 and usable is not None:
            usable, source = usable // jobs, f"{source} / {jobs} sweep jobs at once"
        if jobs > 1 and disk_free is not None:  # their run dirs share the sweep dir's file system
            disk_free, disk_source = disk_free // jobs, f"{disk_source} / {jobs} sweep jobs at once"
        return cls(usable_ram=usable, ram_source=source, allocation_limit=limit, allocation_source=limit_source,
                   cores=memory.usable_cores(), disk_free=disk_free, disk_path=str(place), disk_source=disk_source,
                   gpu_free=functools.lru_cache(maxsize=None)(memory.usable_gpu_bytes),  # asked once per device
                   cuda_present=_visible_gpus() > 0, remote=remote, jobs=jobs)  # fmt: skip


def _allocation_limit() -> tuple[int | None, str]:
    """The largest single allocation the kernel grants: RAM + swap under the heuristic overcommit (mode 0),
    ``CommitLimit - Committed_AS`` under strict accounting (mode 2), unlimited with mode 1."""
    try:
        mode = int(Path("/proc/sys/vm/overcommit_memory").read_text())
    except (OSError, ValueError):
        return None, ""
    info = memory.meminfo()
    if mode == 0 and "MemTotal" in info:
        return info["MemTotal"] + info.get("SwapTotal", 0), "RAM + swap, vm.overcommit_memory=0"
    if mode == 2 and "CommitLimit" in info:
        headroom = max(0, info["CommitLimit"] - info.get("Committed_AS", 0))
        return headroom, "CommitLimit - Committed_AS, vm.overcommit_memory=2"
    return None, ""


def _visible_gpus() -> int:
    """The NVIDIA GPUs this process may use, read without importing torch: those ``CUDA_VISIBLE_DEVICES`` lists (``''``
    or ``-1``: none), else the driver's device nodes ``/dev/nvidiaN``."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    return len([p for p in Path("/dev").glob("nvidia*") if re.fullmatch(r"nvidia\d+", p.name)])


def local_resources() -> tuple[int, int]:
    """(CPUs, GPUs) a Ray started here would have: the usable cores and the visible NVIDIA GPUs."""
    return memory.usable_cores(), _visible_gpus()


_MACHINE: contextvars.ContextVar[Machine | None] = contextvars.ContextVar("drq_machine", default=None)


@contextlib.contextmanager
def on_machine(machine: Machine) -> Iterator[Machine]:
    """Run the checks inside against ``machine``: the one a command's runs see (:func:`drq.config.launchers.machine`),
    or a small or fake one in tests."""
    token = _MACHINE.set(machine)
    try:
        yield machine
    finally:
        _MACHINE.reset(token)


def current_machine() -> Machine:
    """The machine set by :func:`on_machine`, else this one (working directory as the run dir)."""
    return _MACHINE.get() or Machine.here()


# ------------------------------------------------------------------------------------------------ the estimate
def conv_output_side(size: int) -> int:
    """Side of the encoder's output for an H = W = ``size`` frame (:func:`drq.agents.networks.conv_output_hw`, which
    imports torch; tests hold the two equal)."""
    return (size - 3) // 2 + 1 - 6


def replay_slots(v: Mapping[str, Any]) -> int:
    """Frame slots FrameReplay allocates: ``replay_buffer_size + nstep + frame_stack - 1``."""
    return v["replay_buffer_size"] + v["nstep"] + v["frame_stack"] - 1


def episode_frames(v: Mapping[str, Any]) -> tuple[int, str, bool]:
    """(an episode's frames at most, where that figure comes from, whether it is known): ``max_episode_frames``, else
    the task's own limit: DMC's 1000 frames, a Gymnasium env's registered time limit (``max_episode_steps``, or
    ``gym.kwargs.max_episode_steps``; one gym step is one frame), read from gymnasium's registry without building
    the env. An env with no known limit counts as 1000 frames (not ``known``). A terminating env's episodes are
    shorter: each extra episode adds one replay slot (its first step), which this estimate does not count."""
    limit, gym_id = v["max_episode_frames"], v.get("gym.id")
    if limit:
        return limit, f"max_episode_frames={limit}", True
    if gym_id is None:
        return DEFAULT_EPISODE_FRAMES, f"the task's {DEFAULT_EPISODE_FRAMES} frames", True
    from drq.envs import gym_ids  # gymnasium's registry only: no env module is imported

    frames = gym_ids.time_limit_frames(gym_id, v.get("gym.kwargs"))
    if frames is None:
        stand_in = f"{DEFAULT_EPISODE_FRAMES} frames (a stand-in: {gym_id} has no known time limit)"
        return DEFAULT_EPISODE_FRAMES, stand_in, False
    return frames, f"{gym_id}'s time limit of {frames} frames", True


def replay_adds(v: Mapping[str, Any]) -> int:
    """Slots the run writes (agent steps): one per agent step plus one first step per episode, and one to spare."""
    episodes = math.ceil(v["num_train_frames"] / episode_frames(v)[0])
    return math.ceil(v["num_train_frames"] / v["action_repeat"]) + episodes + 1


def frame_bytes(v: Mapping[str, Any]) -> int:
    return 3 * v["image_size"] ** 2


def slot_bytes(v: Mapping[str, Any]) -> int:
    """One replay slot: the uint8 frame and its metadata (action dim bounded by ``ACTION_DIM_BOUND``)."""
    return frame_bytes(v) + 4 * ACTION_DIM_BOUND + META_BYTES_FIXED


def network_params(v: Mapping[str, Any]) -> tuple[int, int]:
    """(trained parameters, target-critic parameters), counted from the layer sizes of drq.agents.networks."""
    side = max(1, conv_output_side(v["image_size"]))
    repr_dim, feature, hidden, a = 32 * side * side, v["feature_dim"], v["hidden_dim"], ACTION_DIM_BOUND
    encoder = 9 * 3 * v["frame_stack"] * 32 + 3 * 9 * 32 * 32 + 4 * 32
    trunk = repr_dim * feature + 3 * feature  # Linear + LayerNorm
    actor = trunk + feature * hidden + hidden * hidden + hidden * 2 * a + 2 * hidden
    critic = trunk + 2 * ((feature + a) * hidden + hidden * hidden + hidden + 2 * hidden)
    return encoder + actor + critic, encoder + critic


def batch_bytes(v: Mapping[str, Any]) -> int:
    """One update's batch and activations: measured bytes per pixel per sample x batch_size x H x W."""
    if v["agent.name"] == "sac":
        passes = v.get("agent.num_critic_augs", 2) + v.get("agent.num_target_augs", 2)
        per_pixel = ACTIVATION_BYTES_PER_PIXEL["sac_per_pass"] * passes
    else:
        per_pixel = ACTIVATION_BYTES_PER_PIXEL["drqv2"]
    return per_pixel * v["batch_size"] * v["image_size"] ** 2


def eval_workers_resolved(eval_workers: int | str, episodes: int, cores: int) -> int:
    """How many environments play the evaluation episodes side by side (drq.run.evaluation): ``1``: one environment in
    the trainer's process, episodes one after another; ``K > 1``: ``K`` worker processes stepping and rendering in
    parallel; ``auto``: one worker per core, at most one per episode and at most 8 (one core: in-process). Evaluation
    blocks training; with Mesa's software renderer 2 workers on 2 cores took 1.25x less wall time (bench/eval.py)."""
    return max(1, min(cores, episodes, MAX_AUTO_EVAL_WORKERS)) if eval_workers == "auto" else int(eval_workers)


def snapshot_bytes(v: Mapping[str, Any]) -> int:
    """Disk the run's snapshots take in its run dir at their largest (0 with ``save_snapshot=false``).

    ``snapshot.pt`` (the agent: weights and Adam's moments, under the 16 bytes per trained parameter of
    :func:`network_params`' count, twice: the new file is written beside the old one, then renamed over it) and, with
    ``save_replay_in_snapshot``, the replay's segment files (:mod:`replay.segments`, one slot's bytes per time step):
    at most :func:`segment_steps_on_disk` steps."""
    if not v.get("save_snapshot", False):
        return 0
    trained, target = network_params(v)
    agent = 2 * (16 * trained + 4 * target)
    if not v.get("save_replay_in_snapshot", True):
        return agent
    # agent steps between two snapshots: snapshot_every_frames, then up to an episode to its end
    stride = math.ceil(v["snapshot_every_frames"] / v["action_repeat"]) + math.ceil(
        episode_frames(v)[0] / v["action_repeat"])
    return agent + segment_steps_on_disk(replay_adds(v), replay_slots(v), stride) * slot_bytes(v)


def segment_steps_on_disk(adds: int, slots: int, stride: int, segment_steps: int = SEGMENT_STEPS) -> int:
    """The most time steps the segment files of a replay with ``slots`` slots hold at once after ``adds`` steps, with
    snapshots at most ``stride`` steps apart. Until a new snapshot is in place, the files of the previous one stay: the
    windows of both, ``slots + min(stride, slots)`` steps at most; up to ``segment_steps`` more of the newest segment's
    previous version and, once the ring has wrapped, of evicted steps in the oldest segment."""
    held = min(slots, adds)
    return min(adds, slots + min(stride, slots)) + min(segment_steps, held) + (segment_steps if adds > slots else 0)


def video_frames(v: Mapping[str, Any]) -> int:
    """Pictures of one recorded episode: one per agent step and the first."""
    return math.ceil(episode_frames(v)[0] / v["action_repeat"]) + 1


@dataclass(frozen=True)
class Footprint:
    """Bytes at the end of the run, by part. ``replay_reserved``: the frames tensor's one allocation;
    ``replay_frames``: frames written by the end; ``replay_meta``: metadata written by the end; ``gpu``: whether the
    networks, the batch and (RAM storage) the frames live on a GPU."""

    replay_reserved: int
    replay_frames: int
    replay_meta: int
    process: int
    networks: int
    batch: int
    envs: int
    env_count: int
    video: int
    storage: str
    gpu: bool
    replay_meta_reserved: int = 0  # the metadata arrays (action, reward, ...) for every slot, in RAM whatever storage
    snapshots: int = 0  # on disk in the run dir: snapshot.pt and the replay's segment files (snapshot_bytes)

    def disk(self, storage: str) -> int:
        """Disk in the run dir at the end of the run with ``storage`` (ram | disk) for the frames: the snapshots, and
        the frames file at its full size (sparse, but every slot may be written)."""
        return self.snapshots + (self.replay_reserved if storage == "disk" else 0)

    @property
    def learner(self) -> int:
        return self.networks + self.batch

    def ram(self, storage: str) -> int:
        """Host RAM at the end of the run with ``storage`` (ram | disk) for the frames."""
        frames = self.replay_frames if storage == "ram" and not self.gpu else 0
        learner = 0 if self.gpu else self.learner
        return frames + self.replay_meta + self.process + learner + self.envs + self.video

    def gpu_memory(self, storage: str) -> int:
        frames = self.replay_reserved if storage == "ram" else 0  # torch.empty on a GPU allocates at once
        return frames + self.learner + CUDA_CONTEXT_BYTES


def _on_gpu(v: Mapping[str, Any], machine: Machine) -> bool:
    device = v["device"]
    return device.startswith("cuda") or (device == "auto" and machine.cuda_present and machine.gpu_free("cuda")
                                         is not None)  # fmt: skip


def footprint(v: Mapping[str, Any], machine: Machine) -> Footprint:
    """The run's memory by part (see the module docstring) for the checked values ``v`` (dotted keys)."""
    gpu = _on_gpu(v, machine)
    slots = replay_slots(v)
    written = min(slots, replay_adds(v))
    trained, target = network_params(v)
    workers = eval_workers_resolved(v["eval_workers"], v["num_eval_episodes"], machine.cores)
    env_count = (1 if v["async_env"] else 0) + (workers if workers > 1 else 0)
    video = video_frames(v) * 3 * v["video_size"] ** 2 + FFMPEG_BYTES if v["save_video"] else 0
    return Footprint(replay_reserved=slots * frame_bytes(v), replay_frames=written * frame_bytes(v),
                     replay_meta=written * (slot_bytes(v) - frame_bytes(v)), process=PROCESS_BYTES,
                     networks=16 * trained + 4 * target, batch=batch_bytes(v), envs=env_count * ENV_PROCESS_BYTES,
                     env_count=env_count, video=video, storage=v.get("replay_storage", "ram"), gpu=gpu,
                     replay_meta_reserved=slots * (slot_bytes(v) - frame_bytes(v)),
                     snapshots=snapshot_bytes(v))  # fmt: skip


# ------------------------------------------------------------------------------------------------ the rules
# the keys a memory line can name, with the smallest value to try and a step (video sizes are even)
_SHRINKABLE = {"replay_buffer_size": (1, 1), "batch_size": (1, 1), "eval_workers": (1, 1), "video_size": (16, 2),
               "image_size": (15, 1)}  # fmt: skip


@dataclass(frozen=True)
class Problem:
    """One exceeded limit: ``kind`` (ram | allocation | disk | gpu), the limit in words, bytes needed and available."""

    kind: str
    words: str
    needed: int
    available: int


def _problems(v: Mapping[str, Any], machine: Machine) -> list[Problem]:
    """The exceeded limits, the largest excess first; [] if the run fits. ``replay_storage=auto`` fits if RAM or
    disk storage fits (its problems are then RAM storage's)."""
    fp, found = footprint(v, machine), []
    gpu_free = machine.gpu_free(v["device"] if v["device"] != "auto" else "cuda") if fp.gpu else None
    for storage in (("ram", "disk") if fp.storage == "auto" else (fp.storage,)):
        # one allocation: the frames tensor in RAM, or with disk storage the metadata arrays (they stay in RAM); the
        # frames file counts at its full size (a sparse file, but the whole of it may be written)
        allocation = fp.replay_meta_reserved if storage == "disk" else 0 if fp.gpu else fp.replay_reserved
        limits = [("ram", f"RAM ({machine.ram_source})", fp.ram(storage), machine.usable_ram),
                  ("allocation", f"one allocation ({machine.allocation_source})", allocation, machine.allocation_limit),
                  ("disk", f"disk ({machine.disk_source} at {machine.disk_path})", fp.disk(storage), machine.disk_free),
                  ("gpu", "GPU memory (free)", fp.gpu_memory(storage), gpu_free)]  # fmt: skip
        over = [Problem(*limit) for limit in limits if limit[3] is not None and limit[2] > limit[3]]
        if not over:
            return []
        found.append(over)
    return sorted(found[0], key=lambda p: p.needed - p.available, reverse=True)


def _round_down(value: int) -> int:
    """Three significant digits, rounded down (3,656,835 -> 3,650,000): a value a user would type."""
    if value < 1000:
        return value
    unit = 10 ** (len(str(value)) - 3)
    return value // unit * unit


def _shrunk(v: Mapping[str, Any], key: str, value: int) -> dict[str, Any]:
    """``v`` with ``key`` set to ``value``, the other keys unchanged, except that a smaller replay takes a batch no
    larger than itself."""
    if key == "replay_buffer_size":
        return dict(v, replay_buffer_size=value, batch_size=min(v["batch_size"], value))
    return dict(v, **{key: value})


def _largest_fitting(v: Mapping[str, Any], key: str, kinds: set[str], machine: Machine) -> int | None:
    """The largest value of ``key`` below its current one with which the limits ``kinds`` hold (:func:`_shrunk`), or
    None if even the smallest does not."""
    low, step = _SHRINKABLE[key]
    current = v[key] if key != "eval_workers" else eval_workers_resolved(v[key], v["num_eval_episodes"], machine.cores)

    def fits(value: int) -> bool:
        return all(p.kind not in kinds for p in _problems(_shrunk(v, key, value), machine))

    if current <= low or not fits(low):
        return None
    lo, hi = low, current  # fits(lo) and not fits(hi)
    while hi - lo > step:
        mid = lo + (hi - lo) // 2
        mid -= (mid - low) % step
        if mid <= lo:
            break
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return _round_down(lo) if key in ("replay_buffer_size", "batch_size") else lo


def _culprit(fp: Footprint, kind: str) -> str:
    """The key to name for an exceeded limit: the one whose part of it is largest."""
    if kind in ("allocation", "disk"):
        return "replay_buffer_size"
    on_gpu = kind == "gpu"
    frames = fp.replay_reserved if on_gpu else fp.replay_frames
    frames_here = fp.storage != "disk" and fp.gpu == on_gpu
    parts = {"replay_buffer_size": frames if frames_here else 0, "batch_size": fp.batch,
             "eval_workers": 0 if on_gpu else fp.envs, "video_size": 0 if on_gpu else fp.video}  # fmt: skip
    return max(parts, key=lambda k: parts[k])


def memory_rule(v: Mapping[str, Any]) -> list[tuple[str, Any, str, str]]:
    """Machine rule: the run's estimated memory (:func:`footprint`) fits in what this machine has; else one line
    naming the value to change, the largest value of it that fits, and ``replay_storage=disk`` where that would fit
    (other exceeded limits are named at the end of the same line)."""
    from drq.envs import tasks

    machine = current_machine()
    if machine.error:  # a bad DRQ_MEMORY_LIMIT or DRQ_DISK_LIMIT: "NAME='value': expected ..."
        name = machine.error.split("=", 1)[0]
        return [(name, os.environ.get(name, ""), machine.error.split(": ", 1)[-1],
                 f"environment variable: {memory.LIMIT_VARIABLES[name]}")]
    if machine.remote:
        return []
    side = tasks.framebuffer_side(v["task_name"])
    if side is not None and max(v["image_size"], v["video_size"]) > side:
        return []  # the render-size rule has its one line already
    if v["eval_workers"] != "auto" and v["eval_workers"] > max_eval_workers(machine.cores):
        return []  # and so has eval_workers_rule
    problems = _problems(v, machine)
    if not problems:
        return []
    fp, size = footprint(v, machine), v["image_size"]
    blamed: dict[str, list[Problem]] = {}  # key -> the exceeded limits it is named for, worst first
    for problem in problems:
        blamed.setdefault(_culprit(fp, problem.kind), []).append(problem)
    key, first = next(iter(blamed)), problems[0]  # the worst limit's key
    parts = [f"replay {format_size(fp.replay_reserved)} reserved, {format_size(fp.replay_frames + fp.replay_meta)} "
             f"written by the end ({min(replay_slots(v), replay_adds(v)):,} frames of 3x{size}x{size})",
             f"learner {format_size(fp.process + fp.learner)} (batch_size={v['batch_size']}: "
             f"{format_size(fp.batch)})"]  # fmt: skip
    if fp.env_count:
        parts.append(f"{fp.env_count} env process{'es' if fp.env_count > 1 else ''} {format_size(fp.envs)}")
    if fp.video:
        parts.append(f"video {format_size(fp.video)}")
    disk_short = any(p.kind == "disk" for p in problems)
    if fp.snapshots and disk_short:
        parts.append(f"snapshots {format_size(fp.snapshots)} on disk")
    best = _largest_fitting(v, key, {p.kind for p in blamed[key]}, machine)
    fix = f"the largest {key} that fits: {best}" if best is not None else f"no {key} fits here"
    if key == "replay_buffer_size" and fp.storage == "auto" and best is not None:
        fitted = dict(_shrunk(v, key, best), replay_storage="ram")
        if _problems(fitted, machine):  # the suggestion fits only with its frames on disk
            fix += (f" (with its frames on disk, where replay_storage=auto puts them: "
                    f"{format_size(footprint(fitted, machine).replay_reserved)} of "
                    f"{format_size(machine.disk_free or 0)} {machine.disk_source} at {machine.disk_path})")
    no_replay = dict(v, save_replay_in_snapshot=False)
    if disk_short and v.get("save_replay_in_snapshot") and all(p.kind != "disk" for p in _problems(no_replay, machine)):
        fix += ", or save_replay_in_snapshot=false (snapshots without the replay: a resumed run starts with it empty)"
    on_disk = dict(v, replay_storage="disk")  # suggested where it fits, and where the config has the key
    if key == "replay_buffer_size" and v.get("replay_storage") == "ram" and not _problems(on_disk, machine):
        fix += (f", or replay_storage=disk (the frames in a file in the run dir: {format_size(fp.replay_reserved)}"
                f" of {format_size(machine.disk_free or 0)} {machine.disk_source} at {machine.disk_path})")
    for other_key, others in blamed.items():
        if other_key != key:
            other, other_best = others[0], _largest_fitting(v, other_key, {p.kind for p in others}, machine)
            fix += (f"; and {other_key}={v[other_key]} needs {format_size(other.needed)} of {other.words}, "
                    f"{format_size(other.available)} available: " +
                    (f"at most {other_best}" if other_best is not None else "no value fits"))  # fmt: skip
    allowed = (f"needs {format_size(first.needed)} of {first.words} but {format_size(first.available)} is available "
               f"({'; '.join(parts)}); {fix}")
    return [(key, v[key], allowed, "estimated from the config before the run: drq/config/footprint.py")]


def max_eval_workers(cores: int) -> int:
    """The most eval worker processes allowed: 2 per core, and never fewer than ``auto`` may start anywhere (8).

    Each worker steps physics and renders in its own process (~260 MB measured); the workers play in lockstep, so
    beyond the cores they only wait for each other (2 per core leaves room for the trainer's ``act`` between steps).
    A config that runs with ``auto`` on an 8-core machine stays valid on a 2-core laptop."""
    return max(MAX_AUTO_EVAL_WORKERS, WORKERS_PER_CORE * cores)


def eval_workers_rule(v: Mapping[str, Any]) -> list[tuple[str, Any, str, str]]:
    """Machine rule: ``eval_workers`` <= :func:`max_eval_workers` of this machine's cores."""
    machine = current_machine()
    if machine.remote or v["eval_workers"] == "auto":
        return []
    most = max_eval_workers(machine.cores)
    if v["eval_workers"] <= most:
        return []
    return [("eval_workers", v["eval_workers"], f"'auto' or at most {most} on this machine ({machine.cores} cores: "
             f"{WORKERS_PER_CORE} worker processes per core, never fewer than auto's {MAX_AUTO_EVAL_WORKERS})",
             "processes; each steps and renders in its own process of ~0.3 GB, and beyond the cores they only wait")]


def storage_decision(v: Mapping[str, Any], machine: Machine) -> tuple[str, str]:
    """``replay_storage`` resolved for this machine, and one line saying why (the trainer prints it at start).

    ``ram`` / ``disk`` as asked; ``auto``: ``ram`` when the run's estimate with its frames in RAM (the same
    :func:`footprint` the memory rule checks) fits every limit, else ``disk`` (a memory-mapped file in the run dir)."""
    fp = footprint(v, machine)
    written = format_size(fp.replay_frames + fp.replay_meta)
    if fp.storage != "auto":
        return fp.storage, f"replay_storage={fp.storage}: {written} of replay by the end of the run"
    problems = _problems(dict(v, replay_storage="ram"), machine)
    if not problems:
        room = "unknown" if machine.usable_ram is None else format_size(machine.usable_ram)
        return "ram", (f"replay_storage=auto -> ram: the run's estimate with its frames in RAM "
                       f"({format_size(fp.ram('ram'))}, {written} of them replay) fits in {room} usable "
                       f"({machine.ram_source})")  # fmt: skip
    worst = problems[0]
    return "disk", (f"replay_storage=auto -> disk: with its frames in RAM the run needs {format_size(worst.needed)} "
                    f"of {worst.words}, {format_size(worst.available)} available; the frames ({written}) go to a "
                    "memory-mapped file in the run dir")  # fmt: skip


# ------------------------------------------------------------------------------------------------ the machine rules
def device_here(device: str) -> str | None:
    """What is wrong with ``device`` on this machine (asks torch, for ``cuda`` only), or None."""
    if not device.startswith("cuda"):
        return None
    import torch

    if not torch.cuda.is_available():
        return "no CUDA device is available"
    if int(device.partition(":")[2] or 0) >= torch.cuda.device_count():
        return f"this machine has {torch.cuda.device_count()} CUDA device(s)"
    return None


def resume_here(resume: str) -> str | None:
    """What is wrong with ``resume``: a path that is neither a snapshot file nor a run dir holding one, or None."""
    if resume in ("auto", "never") or Path(resume).is_file() or (Path(resume) / "snapshot.pt").is_file():
        return None
    return f"{resume} is neither a snapshot file nor a run dir holding snapshot.pt"


def cuda_graphs_rule(v: Mapping[str, Any]) -> list[tuple[str, Any, str, str]]:
    """Machine rule: ``cuda_graphs=true`` needs a CUDA device here and a device that is not the CPU."""
    if v["cuda_graphs"] is not True:
        return []
    import torch

    device, here = v["device"], torch.cuda.is_available()
    where = f"with device={device}" if here else "on this machine, which has no CUDA device"
    why = "each update replays a captured CUDA graph; use device=auto or cuda on a machine with a GPU"
    return [] if here and device != "cpu" else [("cuda_graphs", True, f"false {where}", why)]


MACHINE_RULES = (  # drq.config.schema.check(machine=True) runs them after the rules between keys
    ("`cuda_graphs=true` needs a CUDA device (checked on the machine that runs)", cuda_graphs_rule),
    ("the run's memory at its end (replay, learner, batch, environments, video; drq/config/footprint.py) fits in the "
     "machine's usable RAM (`DRQ_MEMORY_LIMIT`, the cgroup, or MemAvailable), the replay's one allocation in RAM + "
     "swap, for `device=cuda` in the GPU's free memory, and its snapshots (and a `replay_storage=disk` frames file) "
     "in the run dir's disk (`DRQ_DISK_LIMIT`, or the free space); else one line naming the largest value that fits",
     memory_rule),
    ("`eval_workers` <= max(8, 2 x the machine's cores)", eval_workers_rule),
)
