"""Snapshot cost at DrQ-v2's scale: the replay written once (segments) against the whole replay in snapshot.pt.

    python bench/snapshot.py [--sizes 10000,100000,500000] [--path segments|legacy] [--storage ram|disk]
                             [--dir /tmp/drq-bench-snapshot] [--append 5000] [--cold-batches 0] [--resume-into ram,disk]

For each size N (transitions, 84x84 frames, frame stack 3, nstep 3), in a fresh subprocess: a full replay of capacity
N is filled with synthetic frames (written through ``import_range``, as a resume does: ``add`` costs ~1 ms a step on
this CPU, which would time the filling, not the snapshot), then snapshotted; 5,000 more transitions are appended (the
ring wraps, evicting the oldest) and it is snapshotted again. A 32 MB tensor stands for the agent and its optimisers
(DrQ-v2 at 84x84 holds ~8M parameters with Adam's two moments) in both paths.

- ``--path segments`` (this branch): ``replay.segments.ReplayFiles.save`` + ``drq.run.snapshot.save`` of the manifest,
  then ``prune``; resume = ``drq.run.snapshot.load`` + ``ReplayFiles.load`` into a fresh buffer.
- ``--path legacy`` (main at 73f7003): ``FrameReplay.state_dict()`` (a clone of every frame) + ``drq.run.snapshot.save``;
  resume = ``drq.run.snapshot.load`` + ``load_state_dict``. Needs twice the buffer in RAM: 500k (2 x 10.6 GB) does not
  fit beside other work on a 24 GB machine, so run it at 10k/100k/200k.
- ``--storage disk``: the frames of the filled and of the resumed buffer are memory-mapped in ``--dir``.

Per size: ``second_snapshot_s`` and ``second_snapshot_bytes`` (bytes written by write() calls: /proc/self/io wchar),
``snapshot_dir_peak_bytes`` (the snapshot files' allocated blocks at their largest, after a save and before the
prune) beside ``disk_check_bytes`` (what the pre-run disk check counts for them: ``drq.config.footprint``),
peak ``rss``/``rss_anon``/``rss_file`` while it ran (bytes, /proc/self/status sampled every 2 ms: mapped file pages
count in RSS but are reclaimable, anonymous ones are not), ``buffer_bytes``, ``process_peak_rss_anon``/``_file`` (the
filling process from start to end), and from a fresh process per resume (as after a kill; the page cache dropped first
when running as root): ``resume_s``, ``resume_peak_rss_anon``, ``sample_ms`` (median of 30 batches of 256, page cache
warm after 5 batches). Resumed into RAM: no suffix; into disk storage (``--resume-into``, segments path): ``_disk``,
and ``sample_ms_cold_disk``: ``--cold-batches`` batches, each after the frames file's pages were unmapped
(``MADV_DONTNEED``) and dropped from the page cache (a replay much larger than RAM).
Last line: one JSON object with every size and the ``machine``.
"""

from __future__ import annotations

import argparse
import json
import mmap
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SHAPE = (3, 84, 84)
ACTION_DIM = 6
EPISODE_STEPS = 500  # walker_walk at action repeat 2
AGENT_BYTES = 32 * 2**20


def proc_status() -> dict[str, int]:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile"):
                out[key] = int(value.split()[0]) * 1024
    return out


def written_bytes() -> int:
    with open("/proc/self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("wchar:"))


class PeakRSS:
    """Peak VmRSS / RssAnon / RssFile of this process while the ``with`` block runs (sampled every 2 ms)."""

    def __enter__(self) -> "PeakRSS":
        self.peak = proc_status()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.002):
            for key, value in proc_status().items():
                self.peak[key] = max(self.peak[key], value)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        for key, value in proc_status().items():
            self.peak[key] = max(self.peak[key], value)


def drop_page_cache() -> bool:
    try:
        subprocess.run(["sync"], check=True)
        Path("/proc/sys/vm/drop_caches").write_text("1\n")
        return True
    except OSError:
        return False


def synthetic_steps(start: int, stop: int):
    """Arrays for steps [start, stop): tiles of 64 random frames, 500-step episodes."""
    import numpy as np

    rng = np.random.default_rng(0)
    pool = rng.integers(0, 256, size=(64, *SHAPE), dtype=np.uint8)
    g = np.arange(start, stop)
    t = g % (EPISODE_STEPS + 1)
    return {"frames": pool[g % 64], "action": np.zeros((len(g), ACTION_DIM), np.float32),
            "reward": np.ones(len(g), np.float32), "discount": np.ones(len(g), np.float32),
            "t": t.astype(np.int32), "last": t == EPISODE_STEPS}  # fmt: skip


def append(replay, stop: int, chunk: int = 2000) -> None:
    """Steps replay.total .. stop-1, written as a resume does (slots + metadata), in chunks of 42 MB."""
    for a in range(replay.total, stop, chunk):
        b = min(a + chunk, stop)
        replay.import_range(a, synthetic_steps(a, b))
        replay.restore_position(b, replay.rng_state())


def median_sample_ms(replay, batches: int = 30, cold: bool = False) -> float:
    import numpy as np

    for _ in range(0 if cold else 5):
        replay.sample(256)
    times = []
    for _ in range(batches):
        if cold:  # unmap the frames file's pages from this process, then drop them from the page cache
            replay._mapped._mmap.madvise(mmap.MADV_DONTNEED)
            drop_page_cache()
        t0 = time.perf_counter()
        replay.sample(256)
        times.append((time.perf_counter() - t0) * 1e3)
    return round(float(np.median(times)), 2)


def one_size(size: int, path: str, storage: str, directory: Path, append_steps: int) -> dict:
    import gc

    import torch

    from drq.run import snapshot as snapshots
    from replay import FrameReplay
    from replay.segments import ReplayFiles

    run_dir = directory / f"{path}-{storage}-{size}"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)

    def make(name: str) -> FrameReplay:
        frames_file = run_dir / f"{name}.u8" if storage == "disk" else None
        return FrameReplay(size, SHAPE, (ACTION_DIM,), frame_stack=3, nstep=3, discount=0.99, frames_file=frames_file)

    agent = {"stand_in": torch.zeros(AGENT_BYTES // 4)}
    files = ReplayFiles(run_dir / "replay")
    peak_dir_bytes = [0]  # the snapshot files' allocated blocks at their largest: after a save, before the prune

    def snapshot_files() -> list[Path]:  # all but the memory-mapped frames files
        return [p for p in run_dir.rglob("*") if p.is_file() and p.suffix != ".u8"]

    def snapshot(replay: FrameReplay) -> None:
        if path == "legacy":
            assert snapshots.save(run_dir / "snapshot.pt", {"agent": agent, "replay": replay.state_dict()})
        else:
            state = {"agent": agent, "replay": files.save(replay)}
            assert snapshots.save(run_dir / "snapshot.pt", state)
            peak_dir_bytes[0] = max(peak_dir_bytes[0], sum(p.stat().st_blocks * 512 for p in snapshot_files()))
            files.prune(ReplayFiles.names(state["replay"]))

    replay = make("frames")
    t0 = time.perf_counter()
    append(replay, replay.num_slots)
    fill_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    snapshot(replay)
    first_s = time.perf_counter() - t0
    append(replay, replay.total + append_steps)
    gc.collect()
    before = written_bytes()
    with PeakRSS() as peak:
        t0 = time.perf_counter()
        snapshot(replay)
        second_s = time.perf_counter() - t0
    second_bytes = written_bytes() - before
    buffer_bytes, slots, total = replay.nbytes, replay.num_slots, replay.total
    torch.save(tuple(replay.sample(8)), run_dir / "reference.pt")  # drawn after the snapshot: a resume must too
    del replay

    result = {"size": size, "path": path, "storage": storage, "buffer_bytes": buffer_bytes, "fill_s": round(fill_s, 2),
              "first_snapshot_s": round(first_s, 2), "second_snapshot_s": round(second_s, 3),
              "second_snapshot_bytes": second_bytes, "peak_rss": peak.peak["VmRSS"],
              "peak_rss_anon": peak.peak["RssAnon"], "peak_rss_file": peak.peak["RssFile"],
              "snapshot_dir_bytes": sum(p.stat().st_size for p in snapshot_files())}  # fmt: skip
    if path == "segments":  # against what the pre-run disk check counts for this replay and these snapshots
        from drq.config.footprint import segment_steps_on_disk

        result["snapshot_dir_peak_bytes"] = peak_dir_bytes[0]
        result["disk_check_bytes"] = 2 * AGENT_BYTES + buffer_bytes // slots * segment_steps_on_disk(
            total, slots, append_steps)
    return result


def resume(run_dir: Path, size: int, path: str, storage: str, cold_batches: int) -> dict:
    """A fresh process resumes the snapshot in ``run_dir`` into ``storage``; checks it draws the reference batch."""
    import torch

    from drq.run import snapshot as snapshots
    from replay import FrameReplay
    from replay.segments import ReplayFiles

    result: dict = {"page_cache_dropped": drop_page_cache()}
    t0 = time.perf_counter()
    with PeakRSS() as peak:
        state = snapshots.load(run_dir / "snapshot.pt")
        resumed = FrameReplay(size, SHAPE, (ACTION_DIM,), frame_stack=3, nstep=3, discount=0.99,
                              frames_file=run_dir / "resumed.u8" if storage == "disk" else None)  # fmt: skip
        if path == "legacy":
            resumed.load_state_dict(state["replay"])
        else:
            ReplayFiles.load(resumed, state["replay"], run_dir / "replay")
        del state
    result["resume_s"] = round(time.perf_counter() - t0, 2)
    result["resume_peak_rss_anon"], result["resume_peak_rss_file"] = peak.peak["RssAnon"], peak.peak["RssFile"]
    reference = torch.load(run_dir / "reference.pt", weights_only=True)
    assert all(torch.equal(a, b) for a, b in zip(reference, resumed.sample(8))), "the resumed buffer draws others"
    result["sample_ms"] = median_sample_ms(resumed)
    if storage == "disk" and cold_batches:
        result["sample_ms_cold"] = median_sample_ms(resumed, cold_batches, cold=True)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="10000,100000,500000")
    p.add_argument("--path", choices=("segments", "legacy"), default="segments")
    p.add_argument("--storage", choices=("ram", "disk"), default="ram")
    p.add_argument("--dir", default="/tmp/drq-bench-snapshot")
    p.add_argument("--append", type=int, default=5000)
    p.add_argument("--cold-batches", type=int, default=0)
    p.add_argument("--resume-into", default="ram,disk", help="storages the segments are resumed into (segments path)")
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--resume", help=argparse.SUPPRESS)
    args = p.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.resume:
        print(json.dumps(resume(Path(args.resume), sizes[0], args.path, args.storage, args.cold_batches)))
        return
    if args.one:
        with PeakRSS() as whole:  # the filling process from start to end: fill, both snapshots, sample
            result = one_size(sizes[0], args.path, args.storage, Path(args.dir), args.append)
        result.update(process_peak_rss_anon=whole.peak["RssAnon"], process_peak_rss_file=whole.peak["RssFile"])
        print(json.dumps(result))
        return
    results = []
    for size in sizes:  # one process per size: peak RSS and the allocator start clean
        cmd = [sys.executable, __file__, "--one", "--sizes", str(size), "--path", args.path, "--storage",
               args.storage, "--dir", args.dir, "--append", str(args.append), "--cold-batches", str(args.cold_batches),
               "--resume-into", args.resume_into]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"size {size} failed:\n{out.stderr[-3000:]}")
        result = json.loads(out.stdout.strip().splitlines()[-1])
        print(json.dumps(result), flush=True)  # the snapshot figures, before the (long) resumes
        run_dir = Path(args.dir) / f"{args.path}-{args.storage}-{size}"
        # each resume in a fresh process, after the filling one has exited (as after a kill; never two buffers)
        for target in args.resume_into.split(",") if args.path == "segments" else ["ram"]:
            cmd = [sys.executable, __file__, "--resume", str(run_dir), "--sizes", str(size), "--path", args.path,
                   "--storage", target, "--cold-batches", str(args.cold_batches)]  # fmt: skip
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode != 0:
                sys.exit(f"resume of size {size} into {target} failed:\n{out.stderr[-3000:]}")
            suffix = "" if target == "ram" else "_disk"
            result.update({f"{k}{suffix}": v for k, v in json.loads(out.stdout.strip().splitlines()[-1]).items()})
        shutil.rmtree(run_dir, ignore_errors=True)
        results.append(result)
        print(json.dumps(results[-1]), flush=True)
    from drq.speed.hardware import describe

    print(json.dumps({"path": args.path, "storage": args.storage, "append": args.append, "sizes": results,
                      "machine": describe("cpu")}))


if __name__ == "__main__":
    main()
