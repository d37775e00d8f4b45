"""The replay written to disk once (replay.segments) and the disk-backed replay (replay_storage, issue 22).

Reference: the buffer's own full ``state_dict()`` (the pre-issue-22 snapshot format), compared leaf by leaf with
``assert_same_state``; and pixels that encode their step index, so a frame restored into the wrong slot, or a frame of
another step, shows up as a wrong number rather than as a plausible image.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_same_state

from drq.run import snapshot as snapshots
from replay import FrameReplay
from replay.segment_names import SEGMENT_NAME
from replay.segments import SEGMENT_STEPS, ReplayFiles, cells, is_manifest, segment_name

SHAPE = (3, 6, 6)
EPISODE = 23  # steps per episode (not a divisor of the segment size or the ring: boundaries land everywhere)


def make(capacity: int = 40, frames_file: Path | None = None, seed: int = 3) -> FrameReplay:
    return FrameReplay(capacity, SHAPE, (2,), frame_stack=3, nstep=2, discount=0.9, seed=seed, frames_file=frames_file)


def frame_of(g: int) -> np.ndarray:
    """Step g's picture: its index in the first 4 bytes (little endian), g mod 251 everywhere else."""
    frame = np.full(SHAPE, g % 251, np.uint8)
    frame.reshape(-1)[:4] = np.frombuffer(np.uint32(g).tobytes(), np.uint8)
    return frame


def step_of(frames: torch.Tensor) -> np.ndarray:
    return frames.reshape(len(frames), -1)[:, :4].contiguous().numpy().view(np.uint32).ravel()


def fill(replay: FrameReplay, stop: int) -> None:
    """Add steps replay.total .. stop-1 (episode boundaries every EPISODE steps)."""
    for g in range(replay.total, stop):
        t = g % EPISODE
        replay.add(frame_of(g), np.array([g, -g], np.float32), reward=g * 0.5, discount=1.0 - (g % 3 == 0) * 0.5,
                   first=t == 0, last=t == EPISODE - 1)  # fmt: skip


def cell_of(name: str) -> tuple[int, int]:
    """A segment file's cell start and stop, from its name."""
    start, stop, _ = SEGMENT_NAME.fullmatch(name).groups()
    return int(start), int(stop)


def on_disk(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir() if p.name.startswith("seg-") or ".tmp" in p.name}


def commit(path: Path, manifest: dict) -> dict:
    """Stand-in for the trainer's snapshot: snapshot.pt written atomically, read back weights_only."""
    assert snapshots.save(path, {"replay": manifest})
    return snapshots.load(path)["replay"]


def test_resume_from_segments_is_bit_identical_through_wrap_around(tmp_path):
    """Snapshots every 37 steps while the 44-slot ring wraps 7 times: after each, the files on disk are exactly those
    the snapshot names, each step was written once (plus the newest cell's rewrite), and a buffer read back from them
    equals the live one (state_dict leaf by leaf, then the same batches: sampler RNG restored)."""
    live, files = make(), ReplayFiles(tmp_path / "replay", segment_steps=16)
    written = 0
    real_write = files._write

    def counting_write(name, arrays, first):
        nonlocal written
        written += len(arrays["frames"])
        return real_write(name, arrays, first)

    files._write = counting_write
    for stop in range(37, 300, 37):
        fill(live, stop)
        before = written
        manifest = commit(tmp_path / "snapshot.pt", files.save(live))
        files.prune(ReplayFiles.names(manifest))
        assert on_disk(files.directory) == set(ReplayFiles.names(manifest))
        assert written - before <= 37 + 16  # the steps added since the last snapshot + the newest cell again
        resumed = make(seed=99)
        ReplayFiles.load(resumed, manifest, files.directory)
        assert assert_same_state(resumed.state_dict(), live.state_dict(), f"after {stop} steps") >= 6
        assert len(resumed) == len(live) == live._count_valid()
        a, b = live.sample(8), resumed.sample(8)
        assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert live.total > 5 * live.num_slots  # the ring did wrap
    held = step_of(live._frames)
    assert sorted(held.tolist()) == list(range(live.total - live.num_slots, live.total))  # pixels = their steps


def test_manifest_does_not_depend_on_when_snapshots_were_taken(tmp_path):
    """Two buffers with the same steps, snapshotted at different moments, end with the same manifest (what the
    preemption tests compare) and the same segment names."""
    a, b = make(), make()
    fa, fb = ReplayFiles(tmp_path / "a", segment_steps=16), ReplayFiles(tmp_path / "b", segment_steps=16)
    for stop in (10, 50, 51, 130):
        fill(a, stop)
        fa.prune(ReplayFiles.names(fa.save(a)))
    for stop in (33, 97, 130):
        fill(b, stop)
        fb.prune(ReplayFiles.names(fb.save(b)))
    ma, mb = fa.save(a), fb.save(b)
    assert assert_same_state({**ma, "files": None}, {**mb, "files": None}, "manifest") >= 6
    # the names hold a digest of what each file holds: the same, but for the oldest cell [80, 96), which b wrote
    # whole at step 97 and a only at 130, from step 86 (the ring had evicted 80-85): the same steps are held
    assert ma["files"][1:] == mb["files"][1:] and [cell_of(ma["files"][0]), cell_of(mb["files"][0])] == [(80, 96)] * 2
    assert on_disk(fa.directory) == set(ma["files"]) and on_disk(fb.directory) == set(mb["files"])


def test_kill_between_segment_writes_and_snapshot_rename_resumes_the_last_snapshot(tmp_path):
    """A kill after new segments (and a half-written temporary one) reached the disk but before snapshot.pt was
    replaced: the next session deletes them and resumes exactly the state of the snapshot on disk."""
    live, files = make(), ReplayFiles(tmp_path / "replay", segment_steps=16)
    fill(live, 150)
    manifest = commit(tmp_path / "snapshot.pt", files.save(live))
    files.prune(ReplayFiles.names(manifest))
    at_snapshot = live.state_dict()
    fill(live, 230)  # 80 more steps: the oldest cells named by the snapshot are now evicted from the ring
    files.save(live)  # new segments written ...
    (files.directory / f".{segment_name(224, 240)}.tmp123").write_bytes(b"half")  # ... one of them half-way
    # ... and the process dies here, before snapshot.pt is replaced and before prune().
    state = snapshots.load(tmp_path / "snapshot.pt")["replay"]
    session = ReplayFiles(tmp_path / "replay", segment_steps=16)
    session.clean(state)
    assert on_disk(session.directory) == set(ReplayFiles.names(state))
    resumed = make()
    ReplayFiles.load(resumed, state, session.directory)
    assert assert_same_state(resumed.state_dict(), at_snapshot, "resumed") >= 6
    # the adopted files are not rewritten by the next snapshot: only the new steps are
    fill(resumed, 160)
    before = {p.name: p.stat().st_mtime_ns for p in session.directory.iterdir()}
    names = ReplayFiles.names(session.save(resumed))
    assert [cell_of(n) for n in names if n not in before] == [(144, 160)]  # the newest cell only
    assert all(before[n] == (session.directory / n).stat().st_mtime_ns for n in names if n in before)


def test_a_snapshot_refers_only_to_files_that_exist_until_a_newer_one_is_in_place(tmp_path):
    """Evicted and superseded segments survive a save whose snapshot.pt write failed (disk full): the snapshot on
    disk still names them. They go only once a snapshot that no longer names them has been renamed into place."""
    live, files = make(), ReplayFiles(tmp_path / "replay", segment_steps=16)
    fill(live, 60)
    old = commit(tmp_path / "snapshot.pt", files.save(live))
    files.prune(ReplayFiles.names(old))
    fill(live, 200)
    files.save(live)  # the snapshot.pt write that would follow fails: no prune
    assert set(ReplayFiles.names(old)) <= on_disk(files.directory)
    resumed = make()
    ReplayFiles.load(resumed, snapshots.load(tmp_path / "snapshot.pt")["replay"], files.directory)
    assert resumed.total == 60


def test_altered_or_missing_segment_is_a_clear_error(tmp_path):
    live, files = make(), ReplayFiles(tmp_path / "replay", segment_steps=16)
    fill(live, 50)
    manifest = files.save(live)
    first = files.directory / ReplayFiles.names(manifest)[0]
    raw = first.read_bytes()
    frames_at = 2 * 128 + 8  # after the header and int64 of `first`, and the frames record's own 128-byte header
    first.write_bytes(raw[:frames_at + 5] + bytes([raw[frames_at + 5] ^ 1]) + raw[frames_at + 6:])
    with pytest.raises(ValueError, match="frames differ"):
        ReplayFiles.load(make(), manifest, files.directory)
    first.write_bytes(raw[: len(raw) // 2])  # a short file
    with pytest.raises(ValueError, match="unreadable"):
        ReplayFiles.load(make(), manifest, files.directory)
    first.unlink()
    with pytest.raises(ValueError, match="missing"):
        ReplayFiles.load(make(), manifest, files.directory)
    with pytest.raises(ValueError, match="does not match this buffer"):
        ReplayFiles.load(make(capacity=41), manifest, files.directory)


def test_old_snapshots_with_the_whole_replay_still_load(tmp_path):
    """A pre-issue-22 snapshot (replay.state_dict() inside snapshot.pt) is not a manifest and loads as before."""
    live = make()
    fill(live, 120)
    assert snapshots.save(tmp_path / "snapshot.pt", {"replay": live.state_dict()})
    state = snapshots.load(tmp_path / "snapshot.pt")["replay"]
    assert not is_manifest(state) and is_manifest(ReplayFiles(tmp_path / "r").save(live))
    resumed = make()
    resumed.load_state_dict(state)
    assert assert_same_state(resumed.state_dict(), live.state_dict()) >= 6


def test_snapshots_from_before_the_digest_in_the_names_still_resume(tmp_path):
    """A manifest of format v1 (issue 22: no ``files``; segments named by cell and stop only) resumes, its files are
    adopted (not written again) and the next snapshot names them beside the new, digest-named ones."""
    live, files = make(), ReplayFiles(tmp_path / "replay", segment_steps=16)
    fill(live, 60)
    manifest = files.save(live)
    legacy = {k: v for k, v in manifest.items() if k != "files"} | {"format": "drq-replay-segments-v1"}
    for name in manifest["files"]:
        (files.directory / name).rename(files.directory / segment_name(*cell_of(name)))
    legacy = commit(tmp_path / "snapshot.pt", legacy)
    assert ReplayFiles.names(legacy) == [segment_name(*cell_of(n)) for n in manifest["files"]]
    resumed = make()
    ReplayFiles.load(resumed, legacy, files.directory)
    assert assert_same_state(resumed.state_dict(), live.state_dict()) >= 6
    session = ReplayFiles(files.directory, segment_steps=16)
    session.clean(legacy)
    fill(resumed, 70)
    names = session.save(resumed)["files"]
    assert names[:2] == ReplayFiles.names(legacy)[:2]  # [16, 32) and [32, 48): full, adopted
    assert [cell_of(n) for n in names[2:]] == [(48, 64), (64, 70)] and all(SEGMENT_NAME.fullmatch(n)[3] for n in names[2:])


def test_two_timelines_in_one_folder_never_write_over_each_others_files(tmp_path):
    """A resume from an older snapshot with another setting writes steps again whose cells and stops are those of
    files a newer snapshot names, with other contents: each timeline's files get their own names, both resume."""
    a, b = make(), make()
    fill(a, 30)
    fill(b, 30)
    files = ReplayFiles(tmp_path / "replay", segment_steps=16)
    first = commit(tmp_path / "a.pt", files.save(a))
    fill(a, 50)
    fill(b, 49)
    b.add(frame_of(999), np.array([49, -49], np.float32), reward=24.5, discount=1.0, first=False, last=False)  # not 49
    ma = commit(tmp_path / "a.pt", files.save(a))
    session = ReplayFiles(files.directory, segment_steps=16)
    session.clean(first, keep=ReplayFiles.names(ma))
    mb = commit(tmp_path / "b.pt", session.save(b))
    assert [cell_of(n) for n in ma["files"]] == [cell_of(n) for n in mb["files"]] and ma["files"][-1] != mb["files"][-1]
    for manifest, live in ((ma, a), (mb, b)):
        resumed = make()
        ReplayFiles.load(resumed, manifest, files.directory)
        assert assert_same_state(resumed.state_dict(), live.state_dict()) >= 6


def test_cells_cover_the_held_window_once():
    for total in (0, 1, 15, 16, 17, 44, 45, 100, 1000):
        spans = cells(total, 44, 16)
        held = [g for _, start, stop in spans for g in range(start, stop)]
        assert held == list(range(max(0, total - 44), total)), total
        assert all(c % 16 == 0 and c <= s < e <= c + 16 for c, s, e in spans)


# ---------------------------------------------------------------------------------------- disk storage
@pytest.mark.parametrize("stride", [1, 5, 16, 23, 60])  # steps between snapshots; the ring holds 44
def test_segment_files_never_hold_more_than_the_disk_check_counts(tmp_path, stride):
    """Brute force against the pre-run disk check's bound (drq.config.footprint.segment_steps_on_disk): the steps in
    the files on disk, read from each file's first step and its name, counted right after each save (before the prune
    that deletes the previous snapshot's files: the peak), through wrap-around."""
    from drq.config import footprint

    assert footprint.SEGMENT_STEPS == SEGMENT_STEPS  # the config check does not import replay (no torch before a run)
    replay, files, gaps = make(), ReplayFiles(tmp_path, segment_steps=16), []
    while replay.total < 400:
        fill(replay, replay.total + stride)
        manifest = files.save(replay)
        steps = 0
        for path in tmp_path.glob("seg-*"):
            with open(path, "rb") as f:
                steps += int(path.name.split("-")[2].split(".")[0]) - int(np.load(f))  # stop - first
        gaps.append(footprint.segment_steps_on_disk(replay.total, replay.num_slots, stride, 16) - steps)
        files.prune(ReplayFiles.names(manifest))
    assert min(gaps) >= 0, gaps  # never more than the check counts ...
    assert min(gaps) <= 2 * 16, gaps  # ... and at most two segments less, at the peak


def test_disk_storage_samples_the_same_batches_as_ram(tmp_path):
    """Frames memory-mapped in a file: same batches (index_select through the page cache), same snapshot files."""
    ram, disk = make(), make(frames_file=tmp_path / "frames.u8")
    assert (ram.storage, disk.storage) == ("ram", "disk")
    fill(ram, 250)
    fill(disk, 250)
    for _ in range(3):
        a, b = ram.sample(16), disk.sample(16)
        assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert os.path.getsize(tmp_path / "frames.u8") == disk.num_slots * int(np.prod(SHAPE))
    manifest = ReplayFiles(tmp_path / "r", segment_steps=16).save(disk)
    resumed = make(frames_file=tmp_path / "frames2.u8")
    ReplayFiles.load(resumed, manifest, tmp_path / "r")
    assert assert_same_state(resumed.state_dict(), ram.state_dict()) >= 6


def test_auto_storage_picks_what_fits():
    from drq.config import schema as config_schema
    from drq.config import footprint as run_footprint
    from drq.config.footprint import Machine

    gib = 2**30
    walker = config_schema.values(config_schema.defaults("drqv2"))  # 1.1M frames at action repeat 2: ~550k steps

    def small(ram_gib: float) -> Machine:
        return Machine(usable_ram=int(ram_gib * gib), ram_source="test", allocation_limit=int(ram_gib * gib),
                       allocation_source="test", cores=2, disk_free=100 * gib, disk_path="/runs")  # fmt: skip

    assert run_footprint.storage_decision(walker, small(64))[0] == "ram"
    storage, line = run_footprint.storage_decision(walker, small(8))
    assert storage == "disk" and "\n" not in line and "memory-mapped" in line
    for asked in ("ram", "disk"):  # asked for: obeyed
        assert run_footprint.storage_decision({**walker, "replay_storage": asked}, small(8))[0] == asked
        assert run_footprint.storage_decision({**walker, "replay_storage": asked}, small(64))[0] == asked
    # the decision and the pre-run check agree: auto passes the check exactly where one of the two storages fits
    with run_footprint.on_machine(small(8)):
        assert run_footprint.memory_rule(walker) == []
        assert run_footprint.memory_rule({**walker, "replay_storage": "ram"}) != []



# ------------------------------------------------------------------------------------------------- trainer
def compose(*overrides: str) -> dict:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    root = Path(__file__).resolve().parents[1]
    with initialize_config_dir(config_dir=str(root / "cfgs"), version_base="1.3"):
        cfg = hydra_compose("config", overrides=["preset=debug", "task=cartpole_swingup", "wandb.mode=disabled",
                                                 "async_env=false", "save_video=false", *overrides])  # fmt: skip
    return OmegaConf.to_container(cfg, resolve=True)


@pytest.mark.slow
def test_trainer_disk_storage_and_an_old_snapshot_resume_to_the_same_run(tmp_path, monkeypatch):
    """A machine made small (DRQ_MEMORY_LIMIT) gets disk storage, said in one line; its snapshot names segment files.
    The same snapshot rewritten in the old format (the whole replay inside snapshot.pt, no replay/ folder) resumes,
    in RAM, to the same end: same replay manifest, same agent."""
    import shutil

    from drq.config import schema as config_schema
    from drq.config.footprint import Machine, footprint
    from drq.run import trainer

    monkeypatch.setenv("DRQ_MEMORY_LIMIT", "900M")  # the debug run's estimate with its frames in RAM: 1.0 GB
    said: list[str] = []
    cfg = compose("num_train_frames=400")
    t = trainer.Trainer(cfg, tmp_path / "new", say=said.append)
    lines = [s for s in said if s.startswith("replay: ")]
    assert len(lines) == 1 and "replay_storage=auto -> disk" in lines[0] and "(DRQ_MEMORY_LIMIT=900M)" in lines[0], said
    # what the pre-run disk check counts (drq.config.footprint) is what the run holds: the frames file, allocated
    # whole at the start (to the file system's block), and the snapshots
    fp = footprint(config_schema.values(cfg), Machine(usable_ram=None))
    frames_file = tmp_path / "new" / "replay" / "frames.u8"
    assert fp.replay_reserved <= frames_file.stat().st_blocks * 512 < fp.replay_reserved + 4096
    t.train()
    assert not frames_file.exists()  # scratch: gone with the run
    state = snapshots.load(tmp_path / "new")
    assert is_manifest(state["replay"])
    assert on_disk(tmp_path / "new" / "replay") == set(ReplayFiles.names(state["replay"]))
    snapshot_files = [tmp_path / "new" / "snapshot.pt", *(tmp_path / "new" / "replay").glob("seg-*")]
    assert sum(p.stat().st_blocks for p in snapshot_files) * 512 <= fp.snapshots

    shutil.copytree(tmp_path / "new", tmp_path / "old")
    shutil.rmtree(tmp_path / "old" / "replay")
    cfg = state["config"]
    whole = FrameReplay(cfg["replay_buffer_size"], (3, cfg["image_size"], cfg["image_size"]), (1,),
                        frame_stack=cfg["frame_stack"], nstep=cfg["nstep"], discount=cfg["discount"])  # fmt: skip
    ReplayFiles.load(whole, state["replay"], tmp_path / "new" / "replay")
    assert snapshots.save(tmp_path / "old" / "snapshot.pt", {**state, "replay": whole.state_dict()})

    monkeypatch.delenv("DRQ_MEMORY_LIMIT")
    ends = {}
    for name, storage in (("new", "disk"), ("old", "ram")):
        said.clear()
        trainer.run(compose("num_train_frames=800", f"replay_storage={storage}"), tmp_path / name, say=said.append)
        assert any("resumed from" in s and "frame 400" in s for s in said), said
        ends[name] = snapshots.load(tmp_path / name)
    assert assert_same_state(ends["new"]["replay"], ends["old"]["replay"], "replay") >= 6
    assert assert_same_state(ends["new"]["agent"], ends["old"]["agent"], "agent") > 10
    assert on_disk(tmp_path / "old" / "replay") == set(ReplayFiles.names(ends["old"]["replay"]))
