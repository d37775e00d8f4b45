"""What users do with snapshot files (issue 32): resume from another run dir, keep a copy, save on a full or failing
disk, finish a disk-storage run, meet a filesystem error. None of it may cost the replay of a snapshot that exists.

Reference: each snapshot's own manifest, read back through ``replay.segments.ReplayFiles.load`` into a fresh buffer
(every step checked against the CRCs the snapshot recorded): "resumable" below means exactly that. Real filesystems
where the point is the filesystem: a size-limited tmpfs (full disk) and a read-only mount, both mounted for the test
(root; skipped with the reason where mounting is impossible) and unmounted even when the test fails.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest
import torch
from conftest import compose_debug

from drq.run import snapshot as snapshots
from replay import FrameReplay
from replay.segments import ReplayFiles, is_manifest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # training runs (debug preset, a few hundred frames each)
# 200-frame episodes of 25 agent steps; snapshots at each episode end from frame 200; updates from frame 400
BASE = ("preset=debug", "task=cartpole_balance", "wandb.mode=disabled", "async_env=false", "save_video=false",
        "snapshot_every_frames=200", "eval_every_frames=400")  # fmt: skip


def cfg(*overrides: str) -> dict:
    return compose_debug(*overrides, base=BASE)


def train(run_dir: Path, frames: int, *overrides: str) -> None:
    from drq.run import trainer

    trainer.run(cfg(f"num_train_frames={frames}", *overrides), run_dir, say=lambda s: None)


@pytest.fixture(scope="module")
def at_400(tmp_path_factory) -> Path:
    """One run to frame 400 (snapshots at 200 and 400), trained once; each test works on its own copy (:func:`copy`)."""
    run_dir = tmp_path_factory.mktemp("at_400") / "run"
    train(run_dir, 400)
    return run_dir


def copy(run_dir: Path, to: Path) -> Path:
    shutil.copytree(run_dir, to)
    return to


def resumable(path: Path) -> int:
    """The frame of the snapshot at ``path`` after its replay was read back from the ``replay/`` beside it (every
    segment it names, every step checked); raises if any is missing or altered."""
    state = snapshots.load(path)
    manifest = state["replay"]
    assert is_manifest(manifest), "the test needs a snapshot that names segment files"
    config = manifest["config"]
    replay = FrameReplay(config["capacity"], tuple(config["frame_shape"]), tuple(config["action_shape"]),
                         frame_stack=config["frame_stack"], nstep=config["nstep"], discount=config["discount"])
    ReplayFiles.load(replay, manifest, path.parent / "replay")
    assert replay.total == int(manifest["total"]) > 0
    return int(state["counters"]["frame"])


def segment_files(run_dir: Path) -> dict[str, int]:
    """The segment files in ``run_dir/replay``: name -> inode change time (ns), to see one deleted or rewritten."""
    folder = run_dir / "replay"
    return {p.name: p.stat().st_ctime_ns for p in folder.iterdir() if p.name.startswith("seg-")} if folder.is_dir() \
        else {}  # fmt: skip


def named(*paths: Path) -> set[str]:
    return {n for p in paths for n in ReplayFiles.names(snapshots.load(p)["replay"])}


def one_line(error: BaseException) -> str:
    text = str(error)
    assert text and "\n" not in text, text
    return text


# ------------------------------------------------------------------------------------ 1. resume from elsewhere
def test_a_resume_from_another_run_dir_never_touches_this_run_dirs_snapshot(tmp_path, at_400):
    """``hydra.run.dir=A resume=B/snapshot.pt`` where A holds its own snapshot: refused in one line before anything
    is read or deleted, whether B's snapshot is whole or was copied without its replay/ (issue 32, scenario 1).
    Into a new run dir, a resume from B reads B's segments where they are, writes them into the new dir at its first
    snapshot and brings B's logs; a copy of B's snapshot.pt without its replay/ fails in one line and leaves nothing."""
    from drq.config.schema import ConfigError
    from drq.run.resume_changes import ResumeRefused, refuse_before_hydra
    from drq.run.trainer import Trainer

    a, b, alone = copy(at_400, tmp_path / "A"), copy(at_400, tmp_path / "B"), tmp_path / "alone"
    alone.mkdir()
    shutil.copy2(b / "snapshot.pt", alone / "snapshot.pt")  # B's snapshot.pt without its replay/
    a_files, b_files = segment_files(a), segment_files(b)
    for source in (alone / "snapshot.pt", b / "snapshot.pt", b):
        with pytest.raises(ResumeRefused) as refused:
            Trainer(cfg("num_train_frames=800", f"resume={source}"), a, say=lambda s: None)
        line = one_line(refused.value)
        assert str(a) in line and "hydra.run.dir" in line, line
        assert segment_files(a) == a_files  # nothing deleted, nothing rewritten
        assert resumable(a / "snapshot.pt") == 400
    with pytest.raises(ConfigError, match="another run dir's snapshot") as refused:  # train.py: before hydra writes
        refuse_before_hydra([*BASE, f"hydra.run.dir={a}", f"resume={b}"])
    assert one_line(refused.value) == line

    with pytest.raises(snapshots.SnapshotError) as missing:  # a new run dir: B's copy without its replay/ fails
        Trainer(cfg("num_train_frames=800", f"resume={alone / 'snapshot.pt'}"), tmp_path / "new", say=lambda s: None)
    assert "missing" in one_line(missing.value) and str(alone / "replay") in str(missing.value)
    assert segment_files(tmp_path / "new") == {} and not (tmp_path / "new" / "train.csv").exists()

    train(tmp_path / "fork", 400, f"resume={b}")  # resumed at 400: no step, the final snapshot only
    assert resumable(tmp_path / "fork" / "snapshot.pt") == 400  # its replay now in fork/replay
    assert set(segment_files(tmp_path / "fork")) == named(tmp_path / "fork" / "snapshot.pt")
    assert (tmp_path / "fork" / "train.csv").read_text() == (b / "train.csv").read_text()
    assert segment_files(b) == b_files and resumable(b / "snapshot.pt") == 400  # B read, never written


# ---------------------------------------------------------------------------------------------- 2. kept copies
def test_a_copy_kept_in_the_run_dir_keeps_its_segments_and_two_timelines_never_share_a_file(tmp_path, at_400):
    """``cp snapshot.pt snap_400.pt`` in the run dir (issue 32, scenario 2): later snapshots keep the segments the
    copy names; resuming from it (with another batch_size: a new timeline whose cells and stops are those of the live
    snapshot, other contents) leaves the live snapshot resumable until it is replaced, and never writes over a file
    that another kept copy names. Once the copies are deleted, their segments go at the next snapshot."""
    from drq.run.trainer import Trainer

    run = copy(at_400, tmp_path / "run")
    shutil.copy2(run / "snapshot.pt", run / "snap_400.pt")
    train(run, 800)  # snapshots at 600 and 800: the copy's newest segment is superseded
    assert resumable(run / "snap_400.pt") == 400 and resumable(run / "snapshot.pt") == 800
    shutil.copy2(run / "snapshot.pt", run / "snap_800.pt")
    kept = segment_files(run)

    t = Trainer(cfg("num_train_frames=800", f"resume={run / 'snap_400.pt'}", "batch_size=8"), run, say=lambda s: None)
    assert t.frame == 400
    assert segment_files(run) == kept  # the session from the copy deleted nothing
    assert resumable(run / "snapshot.pt") == 800  # the live snapshot, should this session die before its first one
    t.train()  # frames 400 -> 800 again, another timeline (batch_size 8)
    assert resumable(run / "snap_800.pt") == 800  # its files were not written over by the other timeline's
    assert resumable(run / "snap_400.pt") == 400 and resumable(run / "snapshot.pt") == 800
    fork, old = (snapshots.load(run / name)["replay"] for name in ("snapshot.pt", "snap_800.pt"))
    assert torch.equal(fork["stop"], old["stop"]) and not torch.equal(fork["crc_frames"], old["crc_frames"]), \
        "the test needs two timelines with the same cells and stops"  # fmt: skip
    on_disk = set(segment_files(run))
    assert on_disk == named(run / "snapshot.pt", run / "snap_400.pt", run / "snap_800.pt")

    (run / "snap_400.pt").unlink()
    (run / "snap_800.pt").unlink()
    partial = run / "snap_copying.pt"  # a copy still being written: it may name any segment
    partial.write_bytes((run / "snapshot.pt").read_bytes()[:65536])
    with pytest.warns(RuntimeWarning, match="snap_copying.pt looks like a snapshot but cannot be read"):
        train(run, 800)  # resumed at 800: the final snapshot only, then the prune
    assert set(segment_files(run)) == on_disk
    partial.unlink()
    train(run, 800)
    assert set(segment_files(run)) == named(run / "snapshot.pt")


# ----------------------------------------------------------------------------------------------- 3. failed saves
def test_a_failed_save_prunes_against_the_snapshot_on_disk(tmp_path, monkeypatch):
    """snapshot.pt cannot be written after frame 200 (disk full: ENOSPC, or torch's RuntimeError raised over it, as
    a full tmpfs gives): every later attempt writes the new steps' segments, and removes them again once the save
    failed, so the replay folder holds exactly what the snapshot on
    disk names (issue 32, scenario 3); the run goes on to its end."""
    real_save, calls = torch.save, []

    def full(obj, f, *args, **kwargs):
        calls.append(obj["counters"]["frame"])
        if len(calls) > 1:
            f.write(b"partial")
            try:
                raise OSError(errno.ENOSPC, "No space left on device")
            except OSError:  # as torch.save on a full tmpfs: its zip writer's clean-up fails over the ENOSPC
                if len(calls) % 2:
                    raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")
                raise
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(snapshots.torch, "save", full)
    with pytest.warns(RuntimeWarning, match="disk full"):
        train(tmp_path, 1000)
    assert calls == [200, 400, 600, 800, 1000, 1000]  # each episode's end, then the run's
    assert snapshots.load(tmp_path / "snapshot.pt")["counters"]["frame"] == 200
    assert set(segment_files(tmp_path)) == named(tmp_path / "snapshot.pt")
    assert resumable(tmp_path / "snapshot.pt") == 200


def test_an_fsync_error_on_the_run_dir_is_a_failed_save_that_keeps_the_previous_snapshot(tmp_path, monkeypatch,
                                                                                           at_400):  # fmt: skip
    """The folder's fsync after the rename fails (EIO): a warning, training goes on, and the segments of the last
    snapshot known to be on disk stay beside the new one's (either may be the one a crash leaves)."""
    tmp_path = copy(at_400, tmp_path / "run")
    durable = snapshots.load(tmp_path / "snapshot.pt")["replay"]
    run_dir_inode, real_fsync = os.stat(tmp_path).st_ino, os.fsync

    def failing_fsync(fd):
        if os.fstat(fd).st_ino == run_dir_inode:
            raise OSError(errno.EIO, "Input/output error")
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.warns(RuntimeWarning, match="could not write snapshot .*Input/output error.*training goes on"):
        train(tmp_path, 800)
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert snapshots.load(tmp_path / "snapshot.pt")["counters"]["frame"] == 800
    assert set(segment_files(tmp_path)) == named(tmp_path / "snapshot.pt") | set(ReplayFiles.names(durable))
    assert resumable(tmp_path / "snapshot.pt") == 800
    train(tmp_path, 800)  # a save whose fsync succeeds: the older files go
    assert set(segment_files(tmp_path)) == named(tmp_path / "snapshot.pt")


# ------------------------------------------------------------------------------------------- small filesystems
@contextmanager
def mounted_tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``where`` (created), unmounted (lazily: a memory map may still hold it) on
    the way out, whatever happened inside."""
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True,
                          text=True)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a size-limited tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def read_only(where: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(where)], check=True, capture_output=True)


def fill(folder: Path, name: str = "filler") -> Path:
    """Write ``folder/name`` until its filesystem is full (another process filling the disk)."""
    path, chunk = folder / name, b"\0" * 65536
    with open(path, "wb", buffering=0) as f:
        try:
            while True:
                f.write(chunk)
        except OSError as error:
            assert error.errno == errno.ENOSPC, error
    with open(path, "ab", buffering=0) as f:  # the last partial page
        try:
            while True:
                f.write(b"\0")
        except OSError:
            pass
    return path


# ----------------------------------------------------------------------------------------- 4. a full disk
FULL_DISK = """
import errno, sys
import numpy as np
from replay import FrameReplay
folder = sys.argv[1]
replay = FrameReplay(400, (3, 32, 32), (1,), frame_stack=3, nstep=2, frames_file=folder + "/frames.u8")  # 1.2 MB
with open(folder + "/filler", "wb", buffering=0) as f:  # another process fills the disk
    try:
        while True:
            f.write(b"\\0" * 4096)
    except OSError as error:
        assert error.errno == errno.ENOSPC
for g in range(2 * replay.num_slots):  # every slot written, twice
    replay.add(np.full((3, 32, 32), g % 251, np.uint8), np.zeros(1, np.float32), 0.0, 1.0, g % 50 == 0, g % 50 == 49)
print("wrote", replay.total, "steps")
try:
    FrameReplay(400, (3, 32, 32), (1,), frames_file=folder + "/second.u8")
except OSError as error:
    print("second:", error.errno == errno.ENOSPC, error.filename)
"""


def test_a_full_disk_cannot_kill_a_disk_storage_replay(tmp_path):
    """The frames file's blocks are allocated when it is created: another process filling the disk afterwards costs
    no write into it (before: a write into a hole of the sparse file, SIGBUS, the process gone without a word), and a
    frames file that does not fit is an OSError naming it (issue 32, scenario 4). A fresh process: SIGBUS kills it."""
    with mounted_tmpfs(tmp_path / "small", "4M") as small:
        done = subprocess.run([sys.executable, "-c", FULL_DISK, str(small)], cwd=ROOT, capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)  # fmt: skip
        assert done.returncode == 0, f"exit {done.returncode} ({'SIGBUS' if done.returncode == -7 else ''}): " \
                                     f"{done.stderr[-2000:]}"  # fmt: skip
        assert done.stdout.splitlines() == ["wrote 808 steps", f"second: True {small / 'second.u8'}"], done.stdout
        assert not (small / "second.u8").exists()


def test_a_disk_storage_run_whose_disk_fills_stops_in_one_line_and_resumes_once_space_is_freed(tmp_path):
    """train.py, replay_storage=disk, in a 32 MB filesystem that another process fills after the first episode:
    no SIGBUS, no traceback; the snapshots that no longer fit are warnings, and the run ends (exit 0) or stops with
    one ``drq:`` line naming the file and the cause (exit 1). Once the filler is deleted, the same command resumes
    from the last snapshot on disk and finishes; the frames file is gone at the end."""
    from drq.run import trainer

    with mounted_tmpfs(tmp_path / "small", "32M") as small:
        run_dir = small / "run"
        overrides = [*BASE, "replay_storage=disk", "replay_buffer_size=2000", "num_train_frames=800"]
        proc = subprocess.Popen([sys.executable, "train.py", *overrides, f"hydra.run.dir={run_dir}"], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")})  # fmt: skip
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None and not (run_dir / "train.csv").exists():
            time.sleep(0.05)
        filler = fill(small)
        out, err = proc.communicate(timeout=180)
        assert proc.returncode in (0, 1), f"exit {proc.returncode}: {err[-3000:]}"
        assert "Traceback" not in out + err, err[-3000:]
        drq_lines = [line for line in err.splitlines() if line.startswith("drq:")]
        if proc.returncode == 1:
            assert len(drq_lines) == 1 and str(run_dir) in drq_lines[0] and "No space left" in drq_lines[0], err
        else:  # it reached its end: the snapshots that did not fit were warnings
            assert not drq_lines and "disk full" in err, err[-3000:]
        assert not (run_dir / "replay" / "frames.u8").exists()
        frame = resumable(run_dir / "snapshot.pt")
        filler.unlink()
        said: list[str] = []
        trainer.run(compose_debug(*overrides[len(BASE):], base=BASE), run_dir, say=said.append)
        assert any(f"resumed from {run_dir / 'snapshot.pt'} at frame {frame:,}" in s for s in said), said
        assert resumable(run_dir / "snapshot.pt") == 800
        assert set(segment_files(run_dir)) == named(run_dir / "snapshot.pt")
        assert not (run_dir / "replay" / "frames.u8").exists()


# -------------------------------------------------------------------------------------- 5. the frames file
def test_the_frames_file_is_scratch_deleted_when_the_run_ends_and_when_a_session_does_not_use_it(tmp_path):
    """replay_storage=disk: frames.u8 is gone once the run ends; a later session with the frames in RAM deletes the
    one a killed disk-storage session left, at its start (issue 32, scenario 5)."""
    from drq.run.trainer import Trainer

    train(tmp_path, 400, "replay_storage=disk")
    frames = tmp_path / "replay" / "frames.u8"
    assert not frames.exists()
    frames.write_bytes(b"\0" * 2**20)  # what a kill -9 of a disk-storage session leaves
    t = Trainer(cfg("num_train_frames=600", "replay_storage=ram"), tmp_path, say=lambda s: None)
    try:
        assert t.frame == 400 and not frames.exists()
    finally:
        t.close()
    assert resumable(tmp_path / "snapshot.pt") == 400


def test_the_disk_check_credits_what_a_session_frees_or_reuses(tmp_path, monkeypatch, at_400):
    """What the pre-run disk check credits a resumed run dir with (beside the free space) is what the session then
    frees or reuses: its snapshot.pt and the segments it names, the frames file and the leftovers a killed session
    wrote (deleted at the start); not the segments only a kept copy names (they stay on disk)."""
    from drq.machine import memory
    from drq.run.trainer import Trainer

    tmp_path = copy(at_400, tmp_path / "run")
    shutil.copy2(tmp_path / "snapshot.pt", tmp_path / "snap_400.pt")
    train(tmp_path, 600)
    (tmp_path / "replay" / "frames.u8").write_bytes(b"\0" * 2**20)  # a killed disk-storage session's
    (tmp_path / "replay" / "seg-000000000000-000000000099.npys").write_bytes(b"\0" * 10**5)  # and its last segment
    monkeypatch.delenv("DRQ_DISK_LIMIT")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**10, 5 * 10**9, 5 * 10**9))
    credit = memory.usable_disk_bytes(tmp_path, is_run_dir=True) - 5 * 10**9
    before = {p: p.stat().st_blocks * 512 for p in tmp_path.rglob("*") if p.is_file()}

    t = Trainer(cfg("num_train_frames=800", "replay_storage=ram"), tmp_path, say=lambda s: None)
    try:
        live = named(tmp_path / "snapshot.pt")
        freed = sum(size for p, size in before.items() if not p.exists())
        reused = before[tmp_path / "snapshot.pt"] + sum(before[tmp_path / "replay" / n] for n in live)
        assert credit == freed + reused
        kept = named(tmp_path / "snap_400.pt")  # the case above held both kinds
        assert kept and kept <= set(segment_files(tmp_path)) and not kept & live
    finally:
        t.close()


# -------------------------------------------------------------------------------------- 6. filesystem errors
def test_filesystem_errors_on_the_replay_folder_are_one_line_after_the_snapshot_is_known_whole(tmp_path, at_400):
    """replay/ on a read-only filesystem (issue 32, scenario 6): a leftover segment that cannot be deleted, and a
    frames file that cannot be created, are each one line naming the path and the cause, raised after the snapshot
    was read back whole; the snapshot's segments are untouched."""
    from drq.run.trainer import Trainer

    tmp_path = copy(at_400, tmp_path / "run")
    saved = {p.name: p.read_bytes() for p in (tmp_path / "replay").iterdir()}
    with mounted_tmpfs(tmp_path / "replay", "16M") as replay:
        for name, data in saved.items():
            (replay / name).write_bytes(data)
        leftover = replay / "seg-000000000000-000000000999.npys"  # what a killed session wrote after its snapshot
        leftover.write_bytes(b"half")
        read_only(replay)
        with pytest.raises(snapshots.RunDirError) as failed:
            Trainer(cfg("num_train_frames=600", "replay_storage=ram"), tmp_path, say=lambda s: None)
        line = one_line(failed.value)
        assert str(leftover) in line and "Read-only file system" in line, line

        subprocess.run(["mount", "-o", "remount,rw", str(replay)], check=True)
        leftover.unlink()
        read_only(replay)
        with pytest.raises(snapshots.RunDirError) as failed:
            Trainer(cfg("num_train_frames=600", "replay_storage=disk"), tmp_path, say=lambda s: None)
        line = one_line(failed.value)
        assert str(replay / "frames.u8") in line and "Read-only file system" in line, line
        assert {p.name: p.read_bytes() for p in replay.iterdir()} == saved
        assert resumable(tmp_path / "snapshot.pt") == 400


def test_a_segment_that_cannot_be_read_is_one_line(tmp_path, monkeypatch, at_400):
    """An I/O error reading a segment at resume: one line naming the segment and the cause; nothing deleted."""
    from drq.run.trainer import Trainer
    from replay import segments

    tmp_path = copy(at_400, tmp_path / "run")
    files = segment_files(tmp_path)
    real_open = open

    def failing_open(path, *args, **kwargs):
        if Path(path).name.startswith("seg-"):
            raise OSError(errno.EIO, "Input/output error", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(segments, "open", failing_open, raising=False)
    with pytest.raises(snapshots.SnapshotError) as failed:
        Trainer(cfg("num_train_frames=600"), tmp_path, say=lambda s: None)
    line = one_line(failed.value)
    assert "Input/output error" in line and str(tmp_path / "replay" / next(iter(files))) in line, line
    assert segment_files(tmp_path) == files
