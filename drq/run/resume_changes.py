"""What a resume changes: the config keys whose value differs from the snapshot's, and those that may not differ.

A run may be resumed with other values of most keys (``num_train_frames``, logging cadences, ``wandb.*``,
``batch_size``, ``device``, ...): :func:`changes` lists them (old -> new), and the trainer prints them as one line,
writes them to ``metrics.jsonl`` (a ``"section": "resume"`` row) and logs them to wandb at the resume frame.

The keys of :data:`FIXED_KEYS` cannot change within a run: a new value would mix two kinds of data in the replay,
not fit the saved networks, or silently not take effect. :func:`check` refuses them with one line
(:class:`ResumeRefused`, exit 2 in ``train.py``), before anything is written: ``train.py`` runs it before hydra writes
``.hydra/`` into the run dir (:func:`refuse_before_hydra`), and the trainer runs it again before
it builds anything. So is a resume from another run dir's snapshot into a run dir that holds its own
(:func:`foreign_snapshot`): it would replace that run's snapshot and cut its logs to the other run's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from drq.run.snapshot import SnapshotError, snapshots_in

__all__ = ["FIXED_KEYS", "ResumeRefused", "changes", "check", "describe", "foreign_snapshot", "saved_config"]

# key (dotted) -> why it cannot change within a run
FIXED_KEYS: dict[str, str] = {
    "task_name": "the replay holds the old task's frames and rewards",
    "agent.name": "the snapshot holds the other agent's networks",
    "seed": "it names the run: the train env's stream and every evaluation's episodes come from it",
    "frame_stack": "the replay's stacks and the encoder's input channels",
    "action_repeat": "the replay's transitions and the frame clock",
    "image_size": "the replay's frames and the encoder's input",
    "camera_id": "the replay's pictures and what the encoder learned to see",
    "nstep": "the critic's targets so far",
    "discount": "the critic's targets so far",
    "replay_buffer_size": "the replay's capacity",
    "feature_dim": "the networks' shapes",
    "hidden_dim": "the networks' shapes",
    "agent.feature_dim": "the networks' shapes",
    "agent.hidden_dim": "the networks' shapes",
    "agent.target_encoder": "the networks' layout",
    "lr": "the optimisers' saved state holds the learning rate, so a new one would not take effect",
    "agent.lr": "the optimisers' saved state holds the learning rate, so a new one would not take effect",
    "gym.id": "the replay holds the old env's frames and rewards",
    "gym.kwargs": "the env's arguments (its camera, its dynamics): the replay's frames and rewards",
    "gym.pixels": "the replay's pictures and what the encoder learned to see",
}
# Not compared: how this session was asked to resume, and prose.
NOT_COMPARED = ("resume", "precision_reason")


def _fixed(key: str) -> str | None:
    """The :data:`FIXED_KEYS` entry ``key`` falls under (itself, or ``gym.kwargs`` for ``gym.kwargs.<name>``)."""
    return key if key in FIXED_KEYS else "gym.kwargs" if key.startswith("gym.kwargs.") else None


class ResumeRefused(SnapshotError):
    """A resume with another value of a :data:`FIXED_KEYS` key; ``str(error)`` is one line."""


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, Mapping):
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: list(node) if isinstance(node, tuple) else node}


def changes(saved: Mapping[str, Any], now: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Every dotted key whose value differs between the snapshot's config ``saved`` and this session's ``now``, as
    ``{key: (old, new)}`` in ``now``'s order (a key only one side has: ``None`` on the other)."""
    old, new = _flat(saved), _flat(now)
    keys = [*new, *(k for k in old if k not in new)]
    return {k: (old.get(k), new.get(k)) for k in keys if k not in NOT_COMPARED and old.get(k) != new.get(k)}


def _show(value: Any) -> str:
    from drq.config.schema import show

    return show(value)


def describe(diff: Mapping[str, tuple[Any, Any]]) -> str:
    """``'batch_size 16 → 32; num_train_frames 2000 → 4000'`` (``'none'`` when empty)."""
    return "; ".join(f"{k} {_show(a)} → {_show(b)}" for k, (a, b) in diff.items()) or "none"


def check(saved: Mapping[str, Any], now: Mapping[str, Any], source: str | Path) -> dict[str, tuple[Any, Any]]:
    """:func:`changes`, or :class:`ResumeRefused` naming every :data:`FIXED_KEYS` key that differs (old, new, why)."""
    diff = changes(saved, now)
    fixed = [f"{k}: snapshot {a!r}, now {b!r} ({FIXED_KEYS[_fixed(k)]})" for k, (a, b) in diff.items() if _fixed(k)]
    if fixed:
        raise ResumeRefused(f"snapshot {source} was made by an incompatible run ({'; '.join(fixed)}): these keys "
                            "cannot change within a run; resume with the snapshot's values, or start a new run in "
                            "another hydra.run.dir")  # fmt: skip
    return diff


def foreign_snapshot(source: str | Path, run_dir: str | Path) -> str | None:
    """Why resuming ``source`` in ``run_dir`` is refused, or None: ``source`` is another run dir's snapshot and
    ``run_dir`` holds snapshots of its own (``snapshot.pt``, copies kept beside it): a resume into a run dir continues
    that run dir's snapshots; a new run dir takes the other run's logs, and its replay at the first snapshot."""
    source, run_dir = Path(source), Path(run_dir)
    own = snapshots_in(run_dir) if source.resolve().parent != run_dir.resolve() else []
    if not own:
        return None
    return (f"resume={source} is another run dir's snapshot, and {run_dir} holds its own ({', '.join(p.name for p in own)})"
            ": resume into a new hydra.run.dir (that run's logs and replay are copied there), or move them away "
            "first; nothing was changed")


def saved_config(path: str | Path) -> dict[str, Any] | None:
    """The ``config`` of the snapshot at ``path`` (missing keys filled as :func:`drq.config.schema.fill_saved` does),
    read without loading its tensors (``torch.load(mmap=True)``); None if it holds none. Raises
    :class:`drq.run.snapshot.SnapshotError` if the file is unusable."""
    from drq.config import schema as config_schema
    from drq.run import snapshot as snapshots

    config = snapshots.load(path, mmap=True).get("config")
    return config_schema.fill_saved(config) if isinstance(config, dict) and config else None


def refuse_before_hydra(argv: list[str]) -> None:
    """:class:`drq.config.schema.ConfigError` (the :class:`ResumeRefused` line) if the single run of ``argv``
    (``sys.argv[1:]``) resumes a snapshot (``hydra.run.dir=DIR`` holding one, or ``resume=PATH``) made with another
    value of a :data:`FIXED_KEYS` key, or another run dir's snapshot into a ``DIR`` that holds its own
    (:func:`foreign_snapshot`). ``train.py`` runs it before hydra rewrites ``DIR/.hydra/``; the trainer checks
    again (sweep jobs, in-process runs). A snapshot that cannot be read is left to the trainer's own message."""
    from drq.config import errors, schema
    from drq.config.launchers import multirun
    from drq.run import snapshot

    if multirun(argv):
        return
    overrides = errors.parse(argv)
    run_dir = next((o.get_value_element_as_str() for o in overrides if o.key_or_group == "hydra.run.dir"), None)
    own = Path(run_dir) / snapshot.FILENAME if run_dir and "${" not in run_dir else None
    if not any(o.key_or_group == "resume" for o in overrides) and (own is None or not own.is_file()):
        return  # nothing to resume: no composition needed
    (cfg,) = errors.compose([[o.input_line for o in errors.parse(argv, hydra=False)]])
    config = schema.load(cfg)
    source = own if config.resume == "auto" else snapshot.resolve_path(config.resume)
    if config.resume == "never" or source is None or not source.is_file():
        return
    refused = foreign_snapshot(source, run_dir) if own is not None else None
    if refused:
        raise schema.ConfigError(refused)
    try:
        check(saved_config(source) or {}, config.to_dict(), source)
    except ResumeRefused as error:
        raise schema.ConfigError(str(error)) from None
    except SnapshotError:
        return
