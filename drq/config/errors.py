"""The command line checked before hydra writes anything: group values and key names (with the closest name), then each
combination of a sweep composed (hydra writes ``.hydra/`` before it calls the task function) and checked by
:func:`drq.config.schema.check`. A bad one prints one line and exits 2::

    drq: task=walker_wlak: one of the 24 task configs in cfgs/task/; closest: walker_walk, walker_run, walker_stand
"""

from __future__ import annotations

import itertools
import math
import re
import sys
from pathlib import Path
from typing import Any, Callable, Iterable

from drq.config import footprint, launchers, schema
from drq.config.schema import CONFIG_DIR, ConfigError, closest, group_choices

__all__ = ["ConfigError", "check_overrides", "exit_on_bad_overrides", "parse", "compose"]

GROUPS = ("task", "agent", "preset")  # ``protocol`` is chosen by cfgs/config.yaml; a bad one fails composition
MAX_COMBINATIONS = 16  # ~0.2 s per composition
EXIT_CODE = 2
_FLAGS_WITH_VALUE = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn",
                     "--config-dir", "-cd", "--info", "-i", "--experimental-rerun"}  # fmt: skip


def parse(argv: list[str], hydra: bool = True) -> list[Any]:
    """hydra's own parse of the ``key=value`` tokens of ``argv`` (flags skipped; ``hydra=False``: without the
    ``hydra.*`` / ``hydra/`` ones); a syntax error is one :class:`ConfigError` line."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    tokens = [t for i, t in enumerate(argv) if not t.startswith("-") and argv[max(i - 1, 0)] not in _FLAGS_WITH_VALUE]
    out, parser = [], OverridesParser.create()
    for token in tokens:
        key, _, value = token.partition("=")
        if key.rsplit(".", 1)[-1] == "stddev_schedule" and re.match(r"^\s*(step_)?linear\(", value):
            # hydra would read linear(...) as one of its own grammar functions and fail with a multi-line message
            raise ConfigError(f"{token}: quote the schedule for hydra: {key}='{value}' (single quotes inside the "
                              f"argument; in a shell: \"{key}='{value}'\")")
        try:
            out.extend(parser.parse_overrides([token]))
        except Exception as error:  # noqa: BLE001 -- hydra's grammar errors span several lines
            raise ConfigError(f"{token}: not a valid override ({_first_line(error)})") from None
    return [o for o in out if hydra or not re.match(r"hydra($|[./])", o.key_or_group)]


def compose(combinations: Iterable[list[str]], config_dir: Path = CONFIG_DIR) -> Iterable[dict | str]:
    """Each override list composed and resolved to a plain dict, or the first line of hydra's error."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        for combo in combinations:
            try:
                yield OmegaConf.to_container(hydra_compose("config", overrides=combo), resolve=True)
            except Exception as error:  # noqa: BLE001 -- any composition failure is one line
                yield f"invalid configuration: {_first_line(error)}"


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
    from drq.envs import tasks

    hint = closest(value, choices)
    line = f"task={value}: one of the {len(choices)} task configs in cfgs/task/{'; ' + hint if hint else ''}"
    try:
        tasks.resolve_task(value)
        return line + f"; '{value}' is a dm_control task: run it with task_name={value} (and a preset=...)"
    except ValueError:
        return line


def _name_lines(overrides: list[Any], config_dir: Path) -> list[str]:
    """One line per unknown group value or key name, with the closest names."""
    from hydra.core.override_parser.types import OverrideType

    changes = [o for o in overrides if o.type == OverrideType.CHANGE]
    lines, agents = [], set()
    for o in (o for o in changes if o.key_or_group in GROUPS):
        for value in _values(o):
            line = _group_line(o.key_or_group, value, config_dir)
            lines.append(line) if line else agents.add(value) if o.key_or_group == "agent" else None
    known = {k for a in (agents or {"drqv2"}) if a in schema.AGENT_NAMES for k in schema.keys(a)}  # drqv2: the default
    for o in changes:
        key, value = o.key_or_group, o.input_line.partition("=")[2]
        if key in known or key in GROUPS or key == "protocol" or (key.startswith("agent.") and agents - set(
                schema.AGENT_NAMES)):  # an unknown agent is reported above  # fmt: skip
            continue
        owners = [a for a in schema.AGENT_NAMES if key in schema.keys(a)]
        hint = "; " + closest(key, sorted(known)) if closest(key, sorted(known)) else ""
        lines.append(f"{key}={value}: not a key of agent={'/'.join(sorted(agents)) or 'drqv2'} (a key of agent="
                     f"{'/'.join(owners)}; every key: docs/configuration.md)" if owners else
                     f"{key}={value}: unknown config key{hint} (every key: docs/configuration.md)")
    return lines


def _combinations(overrides: list[Any]) -> list[list[str]]:
    """The override lists to compose: every combination of the sweeps when there are at most MAX_COMBINATIONS,
    else each value of each sweep once (the other sweeps at their first value). An interval sweep (optuna) has no
    values to list: its key keeps its composed default here."""
    fixed = [o.input_line for o in overrides if not o.is_sweep_override()]
    sweeps = [[f"{o.get_key_element()}={v}" for v in _values(o)] for o in overrides if o.is_sweep_override()]
    sweeps = [s for s in sweeps if s]
    if math.prod(len(s) for s in sweeps) <= MAX_COMBINATIONS:
        return [fixed + list(combo) for combo in itertools.product(*sweeps)]
    return [fixed + [s[0] for s in sweeps[:i]] + [value] + [s[0] for s in sweeps[i + 1:]]
            for i, sweep in enumerate(sweeps) for value in sweep]


def check_overrides(argv: list[str], config_dir: Path = CONFIG_DIR, machine: bool = True) -> None:
    """:class:`ConfigError` (one line per violation, each once) if the overrides in ``argv`` name an unknown group or
    key, or give a config the schema rejects (``machine=False``: without the checks that ask this machine, to check a
    command meant for another). A sweep (``-m key=a,b``) is checked value by value."""
    overrides = parse(argv, hydra=False)
    lines = _name_lines(overrides, config_dir)
    if not lines:
        combinations = _combinations(overrides)
        here = footprint.Machine.here(launchers.run_dir(argv), remote=launchers.runs_elsewhere(argv),
                                      jobs=launchers.jobs_at_once(argv, len(combinations), config_dir))
        with footprint.on_machine(here):
            for cfg in compose(combinations, config_dir):
                lines += [cfg] if isinstance(cfg, str) else schema.check(cfg, machine=machine)
    sweep = next((o for o in overrides if o.is_sweep_override()), None)
    if not lines and not launchers.multirun(argv) and sweep is not None:
        lines.append(f"{sweep.input_line}: a sweep runs with -m (python train.py -m {sweep.input_line} ...); "
                     f"a list is {sweep.key_or_group}=[...], a string with commas '...'")
    if lines:
        raise ConfigError("\n".join(dict.fromkeys(lines)))


def _first_line(error: BaseException) -> str:
    return (str(error).strip() or type(error).__name__).splitlines()[0]


def exit_on_bad_overrides(argv: list[str] | None = None, config_dir: Path = CONFIG_DIR,
                          also: Iterable[Callable[[list[str]], None]] = ()) -> None:  # fmt: skip
    """Print ``drq: <violation>`` lines to stderr and exit with status 2 if :func:`check_overrides`, the launcher
    check or one of ``also`` (train.py's resume check, ``drq.run.resume_changes.refuse_before_hydra``) raises
    :class:`ConfigError` for ``argv``."""
    argv = sys.argv[1:] if argv is None else argv
    if {"--help", "-h", "--hydra-help"} & set(argv):
        return
    try:
        check_overrides(argv, config_dir)
        launchers.check_launcher(argv, config_dir)
        for check in also:
            check(argv)
    except ConfigError as error:
        print("\n".join(f"drq: {line}" for line in str(error).splitlines()), file=sys.stderr)
        sys.exit(EXIT_CODE)
