"""Check the command line against the config schema before hydra runs: a bad value is one line, not a traceback.

``python train.py task=walker_wlak eval_every_frames=-100`` prints::

    drq: task=walker_wlak: one of the 24 task configs in cfgs/task/; closest: walker_walk, walker_run, walker_stand

and exits with status 2, before hydra writes anything into the run dir and before any environment, renderer, worker
or wandb run starts. The overrides are parsed by hydra's own parser; the groups ``task=``, ``agent=``, ``preset=`` and
every ``key=value`` are checked by name first (``+key=`` adds a key on purpose; ``hydra.*`` is hydra's business and
:mod:`drq.config.launchers`'), then the composed config goes through :func:`drq.config.schema.check` (types, ranges,
rules between keys, and ``machine=True``: CUDA for ``device`` / ``cuda_graphs``, ``resume=PATH``, the run's memory
and ``eval_workers`` against this machine, :mod:`drq.config.footprint`; not for a sweep sent to SLURM or a Ray cluster
elsewhere, whose jobs check themselves where they run, and with the RAM shared among a local sweep's parallel jobs).
Every value of a sweep is checked (every combination when there are at most ``MAX_COMBINATIONS``). Anything else that
makes composition fail is reported with the first line of hydra's message. A single run that would resume a snapshot
made with another value of a key fixed within a run (``drq.run.resume_changes``) is refused here too (:func:`check_resume`).

The config is composed here once per combination, and once more by ``hydra.main`` for the run itself: hydra writes
``.hydra/`` into the run dir before it calls the task function, so a check that must come before anything is
written cannot use hydra's own composition.
"""

from __future__ import annotations

import itertools
import math
import re
import sys
from pathlib import Path
from typing import Any

from drq.config import schema
from drq.config.schema import ConfigError, closest

__all__ = ["ConfigError", "check_overrides", "exit_on_bad_overrides", "group_choices", "CONFIG_DIR", "EXIT_CODE"]

CONFIG_DIR = schema.CONFIG_DIR
GROUPS = ("task", "agent", "preset")
_HYDRA_GROUPS = ("protocol",)  # selected by cfgs/config.yaml's defaults; a bad value fails composition (one line)
MAX_COMBINATIONS = 16  # ~0.2 s per composition
EXIT_CODE = 2
# hydra flags that take a value in the next argument
_FLAGS_WITH_VALUE = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn",
                     "--config-dir", "-cd", "--info", "-i", "--experimental-rerun"}  # fmt: skip


def group_choices(group: str, config_dir: Path = CONFIG_DIR) -> list[str]:
    """Names of the configs in ``cfgs/<group>/`` (without ``.yaml``), sorted."""
    return sorted(p.stem for p in (config_dir / group).glob("*.yaml"))


def _overrides(argv: list[str]) -> list[str]:
    """The ``key=value`` / ``~key`` tokens of ``argv`` (flags and their values skipped)."""
    out, skip = [], False
    for token in argv:
        if skip:
            skip = False
            continue
        if token.startswith("-"):
            skip = token in _FLAGS_WITH_VALUE
            continue
        out.append(token)
    return out


def _parse(tokens: list[str]) -> list[Any]:
    """hydra's own parse of the overrides (so sweeps, ``range()``, ``choice()``, lists and quoting mean what they
    mean to hydra); a syntax error is one line."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    for token in tokens:
        key, _, value = token.partition("=")
        if key.rsplit(".", 1)[-1] == "stddev_schedule" and re.match(r"^\s*(step_)?linear\(", value):
            # hydra would read linear(...) as one of its own grammar functions and fail with a multi-line message
            raise ConfigError(f"{token}: quote the schedule for hydra: {key}='{value}' (single quotes inside the "
                              f"argument; in a shell: \"{key}='{value}'\")")
    parser = OverridesParser.create()
    out = []
    for token in tokens:
        try:
            out.extend(parser.parse_overrides([token]))
        except Exception as error:  # noqa: BLE001 -- hydra's grammar errors span several lines
            raise ConfigError(f"{token}: not a valid override ({_first_line(error)})") from None
    return out


def _is_hydra(override: Any) -> bool:
    key = override.key_or_group
    return key == "hydra" or key.startswith("hydra.") or key.startswith("hydra/")


def _values(override: Any) -> list[str]:
    """The values an override sets: one, or each value of a discrete sweep (``a,b``, ``range(1,4)``, ``choice()``)."""
    if override.is_sweep_override():
        return list(override.sweep_string_iterator()) if override.is_discrete_sweep() else []
    return [] if override.value() is None else [override.get_value_element_as_str()]


def _group_line(group: str, value: str, config_dir: Path) -> str | None:
    choices = group_choices(group, config_dir)
    if value in choices:
        return None
    if group != "task":
        return f"{group}={value}: one of {', '.join(choices)} (cfgs/{group}/)"
    hint = closest(value, choices)
    msg = f"task={value}: one of the {len(choices)} task configs in cfgs/task/{'; ' + hint if hint else ''}"
    try:
        from drq.envs import tasks

        tasks.resolve_task(value)
        msg += f"; '{value}' is a dm_control task: run it with task_name={value} (and a preset=...)"
    except ValueError:  # not a suite name either: nothing to add
        pass
    return msg


def _combinations(overrides: list[Any]) -> list[list[str]]:
    """The override lists to compose: every combination of the sweeps when there are at most MAX_COMBINATIONS,
    else each value of each sweep once (with the other sweeps at their first value)."""
    fixed: list[str] = []
    sweeps: list[list[str]] = []
    for o in overrides:
        if o.is_sweep_override():
            if o.is_discrete_sweep():
                key = o.get_key_element()
                sweeps.append([f"{key}={v}" for v in o.sweep_string_iterator()])
            # an interval sweep (optuna) has no values to list: its key keeps its composed default here
        else:
            fixed.append(o.input_line)
    sweeps = [s for s in sweeps if s]
    if math.prod(len(s) for s in sweeps) <= MAX_COMBINATIONS:
        return [fixed + list(combo) for combo in itertools.product(*sweeps)]
    out = []
    for i, sweep in enumerate(sweeps):
        for value in sweep:
            out.append(fixed + [s[0] for s in sweeps[:i]] + [value] + [s[0] for s in sweeps[i + 1 :]])
    return out


def check_overrides(argv: list[str], config_dir: Path = CONFIG_DIR, machine: bool = True) -> None:
    """Raise :class:`ConfigError` (one line per violation) if the overrides in ``argv`` (``sys.argv[1:]``) give a
    config that :mod:`drq.config.schema` rejects: unknown groups and keys (with the closest names), wrong types,
    out-of-range values, rules between keys, and what this machine lacks (CUDA; ``machine=False`` leaves that out,
    to check here a command meant for another machine). A sweep (``-m key=a,b``) is checked value by value (every
    combination when there are at most MAX_COMBINATIONS)."""
    from hydra.core.override_parser.types import OverrideType

    multirun = any(a in ("-m", "--multirun") for a in argv)
    overrides = [o for o in _parse(_overrides(argv)) if not _is_hydra(o)]
    lines: list[str] = []
    agents = set()
    for o in overrides:
        if o.key_or_group in GROUPS and o.type == OverrideType.CHANGE:
            for value in _values(o):
                line = _group_line(o.key_or_group, value, config_dir)
                lines.append(line) if line else agents.add(value) if o.key_or_group == "agent" else None
    known = set()
    for agent in agents or {schema.defaults()["agent"]["name"]}:
        if agent in schema.AGENT_CONFIGS:
            known |= set(schema.keys(agent))
    for o in overrides:
        key = o.key_or_group
        if o.type != OverrideType.CHANGE or key in GROUPS or key in _HYDRA_GROUPS or key in known:
            continue
        if key.startswith("agent.") and not {a for a in agents if a in schema.AGENT_CONFIGS}.issuperset(agents):
            continue  # an unknown agent is reported above
        value = o.input_line.partition("=")[2]
        owners = [a for a in schema.AGENT_CONFIGS if key in schema.keys(a)]
        if owners:  # a key of the other agent
            lines.append(f"{key}={value}: not a key of agent={'/'.join(sorted(agents)) or 'drqv2'} (a key of "
                         f"agent={'/'.join(owners)}; every key: docs/configuration.md)")
            continue
        hint = closest(key, sorted(known))
        lines.append(f"{key}={value}: unknown config key{'; ' + hint if hint else ''} (every key: "
                     "docs/configuration.md)")
    if not lines:
        combinations = _combinations(overrides)
        from drq.config import launchers as launcher_checks
        from drq.config import footprint as run_footprint

        here = run_footprint.Machine.here(launcher_checks.run_dir(argv), remote=launcher_checks.runs_elsewhere(argv),
                                          jobs=launcher_checks.jobs_at_once(argv, len(combinations), config_dir))
        with run_footprint.on_machine(here):
            lines = _check_combinations(combinations, config_dir, machine)
    if not lines and not multirun:
        sweep = next((o for o in overrides if o.is_sweep_override()), None)
        if sweep is not None:
            lines.append(f"{sweep.input_line}: a sweep runs with -m (python train.py -m {sweep.input_line} ...); "
                         f"a list is {sweep.key_or_group}=[...], a string with commas '...'")
    if lines:
        raise ConfigError("\n".join(dict.fromkeys(lines)))  # each violation once, in order


def _check_combinations(combinations: list[list[str]], config_dir: Path, machine: bool = True) -> list[str]:
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    lines: list[str] = []
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        for combo in combinations:
            try:
                cfg = OmegaConf.to_container(compose("config", overrides=combo), resolve=True)
            except Exception as error:  # noqa: BLE001 -- turn any composition failure into one line
                lines.append(f"invalid configuration: {_first_line(error)}")
                continue
            lines.extend(schema.check(cfg, machine=machine))
    return lines


def check_resume(argv: list[str], config_dir: Path = CONFIG_DIR) -> None:
    """Raise :class:`ConfigError` (:class:`drq.run.resume_changes.ResumeRefused`'s one line) if this single run resumes a
    snapshot (``hydra.run.dir=DIR`` holding one, or ``resume=PATH``) made with another value of a key that cannot
    change within a run. Checked here, before hydra rewrites ``DIR/.hydra/``; the trainer checks again (sweep jobs,
    in-process runs). A snapshot that cannot be read is left to the trainer's own message."""
    if any(a in ("-m", "--multirun") for a in argv):
        return
    overrides = _parse(_overrides(argv))
    run_dir = next((o.get_value_element_as_str() for o in overrides if o.key_or_group == "hydra.run.dir"), None)
    from drq.run import resume_changes
    from drq.run import snapshot as snapshots

    own = Path(run_dir) / snapshots.FILENAME if run_dir and "${" not in run_dir else None
    if not any(o.key_or_group == "resume" for o in overrides) and (own is None or not own.is_file()):
        return  # nothing to resume: no composition needed
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        cfg = OmegaConf.to_container(compose("config", overrides=[o.input_line for o in overrides if not _is_hydra(o)]),
                                     resolve=True)  # fmt: skip
    config = schema.load(cfg)
    if config.resume == "never":
        return
    source = own if config.resume == "auto" else snapshots.resolve_path(config.resume)
    if source is None or not source.is_file():
        return
    try:
        saved = resume_changes.saved_config(source)
        resume_changes.check(saved or {}, config.to_dict(), source)
    except resume_changes.ResumeRefused as error:
        raise ConfigError(str(error)) from None
    except snapshots.SnapshotError:
        return


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


def exit_on_bad_overrides(argv: list[str] | None = None, config_dir: Path = CONFIG_DIR) -> None:
    """Print ``drq: <violation>`` lines to stderr and exit with status 2 if :func:`check_overrides` (or the launcher
    check) rejects ``argv``."""
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("--help", "-h", "--hydra-help") for a in argv):
        return
    try:
        check_overrides(argv, config_dir)
        from drq.config.launchers import check_launcher

        check_launcher(argv, config_dir)
        check_resume(argv, config_dir)
    except ConfigError as error:
        for line in str(error).splitlines():
            print(f"drq: {line}", file=sys.stderr)
        sys.exit(EXIT_CODE)
