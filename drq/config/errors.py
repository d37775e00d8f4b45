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
from typing import Any, Callable, Iterable

from drq.config import footprint, launchers, schema
from drq.config.schema import CONFIG_DIR, ConfigError, closest, group_choices

__all__ = ["ConfigError", "check_overrides", "exit_on_bad_overrides", "parse", "compose"]

GROUPS = ("task", "agent", "preset")  # ``protocol`` is chosen by cfgs/config.yaml; a bad one fails composition
MAX_COMBINATIONS = 16  # ~0.2 s per composition
_FLAGS_WITH_VALUE = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn",
                     "--config-dir", "-cd", "--info", "-i", "--experimental-rerun"}  # fmt: skip


def _first_line(error: BaseException) -> str:
    return (str(error).strip() or type(error).__name__).splitlines()[0]


def parse(argv: list[str], hydra: bool = True) -> list[Any]:
    """hydra's own parse of the ``key=value`` tokens of ``argv`` (flags skipped; ``hydra=False``: without the
    ``hydra.*`` / ``hydra/`` ones); a syntax error is one :class:`ConfigError` line."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    out, parser = [], OverridesParser.create()
    for i, token in enumerate(argv):
        if token.startswith("-") or argv[max(i - 1, 0)] in _FLAGS_WITH_VALUE:
            continue
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


def compose(combinations: Iterable[list[str]]) -> Iterable[dict | str]:
    """Each override list composed and resolved to a plain dict, or the first line of hydra's error."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
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


def _group_line(group: str, value: str) -> str | None:
    choices = group_choices(group)
    if value in choices:
        return None
    if group != "task":
        return f"{group}={value}: one of {', '.join(choices)} (cfgs/{group}/)"
    from drq.envs import gym_ids, tasks

    dmc = [c for c in choices if c != "gym"]  # task=gym is the switch to a Gymnasium env
    hint = closest(value, dmc)
    line = f"task={value}: one of the {len(dmc)} task configs in cfgs/task/{'; ' + hint if hint else ''}"
    try:
        tasks.resolve_task(value)
        return line + f"; '{value}' is a dm_control task: run it with task_name={value} (and a preset=...)"
    except ValueError:
        pass
    if gym_ids.is_entry_point(value) or value in gym_ids.registered_ids():
        return line + f"; '{value}' is a Gymnasium env: run it with task=gym gym.id={value}"
    return line + "; or task=gym gym.id=... (a Gymnasium env)"


def _name_lines(overrides: list[Any]) -> list[str]:
    """One line per unknown group value or key name, with the closest names."""
    from hydra.core.override_parser.types import OverrideType

    changes = [o for o in overrides if o.type == OverrideType.CHANGE]
    chosen = [(o.key_or_group, value) for o in changes if o.key_or_group in GROUPS for value in _values(o)]
    lines = [line for group, value in chosen if (line := _group_line(group, value))]
    agents = sorted({v for g, v in chosen if g == "agent" and v in schema.AGENT_NAMES}) or ["drqv2"]  # the default
    known = sorted({k for agent in agents for k in schema.keys(agent)})
    for o in changes:
        key, value = o.key_or_group, o.input_line.partition("=")[2]
        if key == "gym.kwargs" and value.startswith("{") and value != "{}":  # new keys in a mapping: only with '+'
            lines.append(f"gym.kwargs={value}: hydra adds keyword arguments only with a '+': '+gym.kwargs={value}' "
                         "(or one at a time: +gym.kwargs.NAME=VALUE)")
            continue
        if key in known or key in GROUPS or key == "protocol":
            continue
        if key.startswith("gym.kwargs."):  # a new key inside a mapping: hydra adds it only with '+'
            lines.append(f"{key}={value}: add a keyword argument with a '+': +{key}={value} (or "
                         f"'+gym.kwargs={{{key.split('.', 2)[2]}:{value}}}')")
            continue
        owners, hint = [a for a in schema.AGENT_NAMES if key in schema.keys(a)], closest(key, known)
        lines.append(f"{key}={value}: not a key of agent={'/'.join(agents)} (a key of agent={'/'.join(owners)}; "
                     "every key: docs/configuration.md)" if owners else f"{key}={value}: unknown config key"
                     f"{'; ' + hint if hint else ''} (every key: docs/configuration.md)")
    return lines


def combinations(overrides: list[Any]) -> list[list[str]]:
    """The override lists to compose: every combination of the sweeps when there are at most MAX_COMBINATIONS,
    else each value of each sweep once (the other sweeps at their first value). An interval sweep (optuna) has no
    values to list: its key keeps its composed default here."""
    fixed = [o.input_line for o in overrides if not o.is_sweep_override()]
    sweeps = [[f"{o.get_key_element()}={v}" for v in _values(o)] for o in overrides if o.is_sweep_override()]
    sweeps = [s for s in sweeps if s]
    if math.prod(len(s) for s in sweeps) <= MAX_COMBINATIONS:
        return [fixed + list(combo) for combo in itertools.product(*sweeps)]
    firsts = [s[0] for s in sweeps]
    return [fixed + firsts[:i] + [value] + firsts[i + 1:] for i, sweep in enumerate(sweeps) for value in sweep]


def check_overrides(argv: list[str], machine: bool = True) -> None:
    """:class:`ConfigError` (one line per violation, each once) if the overrides in ``argv`` name an unknown group or
    key, or give a config the schema rejects (``machine=False``: without the checks that ask this machine, to check a
    command meant for another). A sweep (``-m key=a,b``) is checked value by value."""
    overrides = parse(argv, hydra=False)
    lines = _name_lines(overrides)
    if not lines:
        combos = combinations(overrides)
        with footprint.on_machine(launchers.machine(argv, len(combos))):
            for cfg in compose(combos):
                lines += [cfg] if isinstance(cfg, str) else schema.check(cfg, machine=machine)
    sweep = next((o for o in overrides if o.is_sweep_override()), None)
    if not lines and sweep is not None and not launchers.multirun(argv):
        lines.append(f"{sweep.input_line}: a sweep runs with -m (python train.py -m {sweep.input_line} ...); "
                     f"a list is {sweep.key_or_group}=[...], a string with commas '...'")
    if lines:
        raise ConfigError("\n".join(dict.fromkeys(lines)))


def exit_on_bad_overrides(argv: list[str], also: Iterable[Callable[[list[str]], None]] = ()) -> None:
    """Print ``drq: <violation>`` lines to stderr and exit 2 if :func:`check_overrides`, the launcher check or one of
    ``also`` (train.py's resume check) raises :class:`ConfigError` for ``argv`` (``sys.argv[1:]``)."""
    if {"--help", "-h", "--hydra-help"} & set(argv):
        return
    try:
        for check in (check_overrides, launchers.check_launcher, *also):
            check(argv)
    except ConfigError as error:
        print("\n".join(f"drq: {line}" for line in str(error).splitlines()), file=sys.stderr)
        sys.exit(2)
