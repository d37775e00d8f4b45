"""Snapshots and exact resume: what a snapshot holds, reading it back, and the replay of an interrupted episode's
actions.

Periodic snapshots (every ``snapshot_every_frames``, and at the end of training) are taken at an episode boundary,
after the episode's train.csv row and before the next reset. They hold the agent, the replay, the RNG states of
python / numpy / torch (the replay's sampler RNG is in its own state), the counters and the log files' positions.
The environments' own RNGs need no saving: every training episode starts with ``reset(seed=...)`` from ``(seed,
episode index)`` and every evaluation episode from ``(seed, frame, episode index)`` (:mod:`drq.run.seeds`), so the
next episode after a resume starts where it would have started in a run that never stopped, whatever the env did
before. Resuming from such a snapshot therefore gives the same frames, rows and parameters (on CPU) as a run that
never stopped, with or without the async env worker.

A snapshot taken on a stop signal (or when an evaluation env kept failing: :mod:`drq.run.restarts`) is taken
mid-episode; it also holds the episode's actions, return and frames, and the metric sums since the last ``health``
line. The resume resets the train env with that episode's seed, replays those actions (physics is deterministic),
checks that the last picture is the one saved, and goes on from there: the resumed run is bit-exact too. If the
pictures differ (another MuJoCo build, say, or a snapshot from before the training episodes had seeds of their own),
if the snapshot holds no actions (older still), or if the env fails on the way, the interrupted episode is dropped
and a new one starts (its transitions stay in the replay): continuous, not bit-exact.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from drq.config import schema as config_schema
from drq.envs.restarting import EnvRestarted
from drq.run import provenance, resume_changes
from drq.run import snapshot as snapshots
from drq.run.metrics import MetricWindow
from drq.run.seeds import train_episode_seed
from drq.run.sinks import RunFiles
from drq.run.state import Parts, RunState


def load_resume_state(parts: Parts) -> dict[str, Any] | None:
    """The snapshot to resume from (``cfg.resume``: auto | never | a path), or None to start afresh; read before
    anything is written, so that a bad snapshot changes nothing. Sets ``parts.resume_changes`` (the config keys that
    differ from the snapshot's; keys that cannot change within a run raise :class:`ResumeRefused`, and so does
    another run dir's snapshot where this run dir holds its own: :func:`resume_changes.foreign_snapshot`)."""
    resume, run_dir, snapshot_path = parts.cfg.resume, parts.run_dir, parts.snapshot_path
    if resume == "never":
        if snapshot_path.exists():
            raise snapshots.SnapshotError(
                f"{run_dir} already holds a snapshot and resume=never: choose another hydra.run.dir "
                "(nothing was overwritten)"
            )
        return None
    source = snapshot_path if resume == "auto" else snapshots.resolve_path(resume)
    if resume == "auto" and not source.exists():
        return None
    refused = resume_changes.foreign_snapshot(source, run_dir)
    if refused:
        raise resume_changes.ResumeRefused(refused)
    state = snapshots.load(source)
    saved = state.get("config")
    if isinstance(saved, dict) and saved:  # a key the saved config predates: the schema's legacy value or default
        saved = config_schema.fill_saved(saved)
    # keys that cannot change within a run are refused (ResumeRefused); the others are announced after the restore
    parts.resume_changes = resume_changes.check(saved or {}, parts.config_dict(), source)
    state["_source"] = str(source)
    return state


def resumes_here(parts: Parts, saved: Mapping[str, Any] | None) -> bool:
    """Whether the resume source is this run dir's own snapshot (then its replay segments are this run's)."""
    return saved is not None and Path(saved["_source"]).parent.resolve() == parts.run_dir.resolve()


def restore(parts: Parts, state: RunState, window: MetricWindow, saved: dict[str, Any]) -> None:
    """Put the snapshot ``saved`` back: agent, replay, counters, log files, RNGs, metric window; then replay the
    interrupted episode's actions, if any (see the module docstring). Says what it did."""
    source = saved["_source"]
    try:
        parts.agent.load_state_dict(saved["agent"])
    except Exception as error:  # noqa: BLE001
        raise snapshots.SnapshotError(f"snapshot {source} does not fit this agent: {error}") from None
    if saved.get("replay") is not None:
        from replay.segments import is_manifest

        try:
            if is_manifest(saved["replay"]):  # read where the snapshot is (another run dir's: copied here when saved)
                parts.replay_files.load(parts.replay, saved["replay"], Path(source).parent / "replay")
            else:  # a snapshot from before issue 22: the whole replay inside snapshot.pt
                parts.replay.load_state_dict(saved["replay"])
        except Exception as error:  # noqa: BLE001
            raise snapshots.SnapshotError(f"snapshot {source} does not fit this replay: {error}") from None
    if not resumes_here(parts, saved):  # another run dir's snapshot, now known to load: its logs replace any here
        for name in RunFiles.FILES:  # (this run dir holds no snapshot: its logs are a session's that saved none)
            (parts.run_dir / name).unlink(missing_ok=True)
            if (Path(source).parent / name).exists():
                shutil.copyfile(Path(source).parent / name, parts.run_dir / name)
    state.restore_counters(saved["counters"])
    state.wandb_run_id = saved.get("wandb_run_id")
    parts.files.truncate(saved["logger"])
    snapshots.restore_rng(saved["rng"])
    window.load_state_dict(saved.get("health_window"), parts.device)
    replayed = state.in_episode_at_snapshot and _replay_interrupted_episode(parts, state, saved.get("episode"))
    notes = [f"resumed from {source} at frame {state.frame:,} (episode {state.episode})"]
    if saved.get("replay") is None:
        notes.append("the snapshot holds no replay (save_replay_in_snapshot=false): the replay starts empty")
    if state.in_episode_at_snapshot:
        notes.append(f"the interrupted episode goes on from frame {state.episode_frames} (its actions replayed)"
                     if replayed else "the snapshot was taken mid-episode: that episode is dropped and a new one "
                     "starts")  # fmt: skip
    parts.say("; ".join(notes))


def _replay_interrupted_episode(parts: Parts, state: RunState, episode: Mapping[str, Any] | None) -> bool:
    """Reset the train env with the interrupted episode's seed and step it with its actions; True if it ends on the
    saved picture (then the loop goes on inside that episode), False if the episode has to be dropped."""
    if not episode or state.train_resets == 0:
        return False
    try:
        ts = parts.train_env.reset(seed=train_episode_seed(parts.cfg.seed, state.train_resets - 1))
        for action in episode["actions"].numpy():
            ts = parts.train_env.step(action)
    except EnvRestarted:  # the env failed on the way (its line says so; a new one is ready)
        return False
    if not np.array_equal(np.asarray(ts.frame), episode["last_frame"].numpy()):
        warnings.warn("replaying the interrupted episode's actions did not reproduce its last picture (another "
                      "MuJoCo or renderer?); that episode is dropped", RuntimeWarning, stacklevel=3)  # fmt: skip
        return False
    state.ts = ts
    state.episode_reward, state.episode_frames = float(episode["reward"]), int(episode["frames"])
    state.episode_actions = list(episode["actions"].numpy())
    return True


def announce_changes(parts: Parts, state: RunState) -> None:
    """One line listing every config key this session changed (old → new), a ``resume`` row in metrics.jsonl and
    a wandb point at the resume frame, so the curves show where the settings changed."""
    changes = parts.resume_changes
    parts.say(f"resumed with other settings at frame {state.frame:,}: {resume_changes.describe(changes)}")
    parts.files.resume(state.frame, state.step, state.total_time, changes)
    parts.wandb.resume_changes(state.frame, changes)


def snapshot_state(parts: Parts, state: RunState, window: MetricWindow) -> dict[str, Any]:
    """Everything a resume needs, as state dicts and plain values (``torch.load(weights_only=True)``-safe)."""
    episode = None
    if state.ts is not None:
        actions = np.stack(state.episode_actions) if state.episode_actions else np.zeros((0, *parts.action_shape))
        episode = {"actions": torch.from_numpy(actions.astype(np.float32)), "reward": state.episode_reward,
                   "frames": state.episode_frames, "last_frame": torch.from_numpy(np.array(state.ts.frame))}
    return {
        "config": parts.config_dict(),
        "agent": parts.agent.state_dict(),
        # the replay's new segments are written here (RUN_DIR/replay); snapshot.pt holds their manifest
        "replay": parts.replay_files.save(parts.replay) if parts.cfg.save_replay_in_snapshot else None,
        "counters": state.counters(),
        "rng": snapshots.capture_rng(),
        "logger": parts.files.position(),
        "wandb_run_id": parts.wandb.run_id,
        "provenance": parts.sessions,  # run.json's sessions: what each session ran on
        "env": provenance.env_record(parts.config_dict(), parts.observation_shape, parts.train_env.action_low,
                                     parts.train_env.action_high),  # what a deployment needs (drq.load_policy)
        "episode": episode,  # the current training episode (mid-episode snapshots), else None
        "health_window": window.state_dict(),
    }


def save_snapshot(parts: Parts, state: RunState, window: MetricWindow) -> bool:
    """Write snapshot.pt (when ``save_snapshot``); False if not written (the previous one then stays whole). Either
    way, the replay segments no snapshot on disk names go (evicted, superseded, or written for a save that failed)."""
    if not parts.cfg.save_snapshot:
        return False
    try:
        saved = snapshot_state(parts, state, window)
    except OSError as error:  # a replay segment could not be written: the previous snapshot stays whole
        snapshots.warn_not_written(parts.snapshot_path, error)
        ok = False
    else:
        ok = snapshots.save(parts.snapshot_path, saved)
        if ok:
            parts.snapshots_here.saved(saved["replay"])
    _prune_replay(parts)
    return ok


def clean_replay_folder(parts: Parts, saved: Mapping[str, Any] | None) -> None:
    """At the start of a session, once the snapshot resumed from (``saved``, None: none) is known whole: adopt its
    segment files if they are this run dir's, delete those no snapshot here names (what a killed session wrote after
    its last snapshot), and the frames file where this session keeps its frames in RAM (an earlier disk-storage
    session's scratch). Raises :class:`snapshots.RunDirError` (one line) where a file cannot be deleted."""
    from replay.segments import is_manifest

    replay = saved.get("replay") if resumes_here(parts, saved) else None
    files = parts.replay_files
    try:
        if parts.replay.storage == "ram" and files.frames_file.exists():
            files.frames_file.unlink()
        try:
            named = parts.snapshots_here.named()
        except snapshots.SnapshotError as unreadable:  # a copy still being written: it may name any segment
            warnings.warn(f"{unreadable}; no replay segment is deleted while it is there", RuntimeWarning,
                          stacklevel=2)  # fmt: skip
            named = {p.name for p in files.directory.iterdir()} if files.directory.is_dir() else set()
        files.clean(replay if is_manifest(replay) else None, keep=named)
    except OSError as error:
        raise snapshots.RunDirError.of("delete", error) from None


def _prune_replay(parts: Parts) -> None:
    """Delete the segment files no snapshot on disk names (:class:`drq.run.snapshot.SnapshotsHere`); a file that
    cannot be deleted, or a snapshot here that cannot be read, is a warning: nothing is lost, the files stay."""
    try:
        parts.replay_files.prune(parts.snapshots_here.named())
    except snapshots.SnapshotError as unreadable:
        warnings.warn(f"{unreadable}; replay segments are kept while it is there", RuntimeWarning, stacklevel=3)
    except OSError as error:
        warnings.warn(f"{snapshots.RunDirError.of('delete', error)}; it is tried again at the next snapshot",
                      RuntimeWarning, stacklevel=3)  # fmt: skip
