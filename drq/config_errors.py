"""Check command-line overrides against ``cfgs/`` before hydra runs, so a typo gives one line, not a traceback.

``python train.py task=walker_wlak`` prints::

    drq: unknown task 'walker_wlak'; closest: walker_walk, walker_run, walker_stand (24 task configs in cfgs/task/)

and exits with status 2. Checked: the config groups ``task=``, ``agent=``, ``preset=`` (each value of a
comma-separated sweep), ``task_name=`` (against :mod:`drq.tasks`), and every plain ``key=value`` against the keys of
the composed config (``+key=`` adds a key on purpose and is not checked; ``hydra.*`` is hydra's own business), the
values of the keys with fixed choices (``precision``, ``compile``, ``eval_workers``), and ``cuda_graphs=true`` without a
CUDA device.
Anything else that makes composition fail is reported with the first line of hydra's message.
"""

from __future__ import annotations

import difflib
import re
import sys
from pathlib import Path
from typing import Any, Iterable

CONFIG_DIR = Path(__file__).resolve().parent.parent / "cfgs"
GROUPS = ("task", "agent", "preset")
EXIT_CODE = 2
# hydra flags that take a value in the next argument
_FLAGS_WITH_VALUE = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn",
                     "--config-dir", "-cd", "--info", "-i", "--experimental-rerun"}  # fmt: skip


class ConfigError(ValueError):
    """A bad override; ``str(error)`` is the one line shown to the user."""


def group_choices(group: str, config_dir: Path = CONFIG_DIR) -> list[str]:
    """Names of the configs in ``cfgs/<group>/`` (without ``.yaml``), sorted."""
    return sorted(p.stem for p in (config_dir / group).glob("*.yaml"))


def _closest(value: str, choices: Iterable[str], n: int = 3) -> list[str]:
    choices = list(choices)
    close = difflib.get_close_matches(value, choices, n=n, cutoff=0.5)
    if not close:
        close = [c for c in choices if value.lower() in c.lower() or c.lower() in value.lower()][:n]
    return close


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


def _split(override: str) -> tuple[str, str, str | None]:
    """``'+a.b=1'`` -> ``('+', 'a.b', '1')``; ``'~a'`` -> ``('~', 'a', None)``."""
    prefix = ""
    for p in ("++", "+", "~"):
        if override.startswith(p):
            prefix, override = p, override[len(p) :]
            break
    key, sep, value = override.partition("=")
    return prefix, key.strip(), (value.strip() if sep else None)


def _is_sweep_or_function(value: str) -> bool:
    return "," in value or "(" in value or "${" in value


def _check_group(group: str, value: str, config_dir: Path) -> None:
    choices = group_choices(group, config_dir)
    for v in value.split(",") if "(" not in value else []:
        v = v.strip()
        if v in choices:
            continue
        if group == "task":
            raise ConfigError(_unknown_task(v, choices))
        hint = _closest(v, choices)
        closest = f"; closest: {', '.join(hint)}" if hint and len(choices) > 4 else ""
        raise ConfigError(f"unknown {group} '{v}'{closest}; choices: {', '.join(choices)}")


def _unknown_task(value: str, choices: list[str]) -> str:
    msg = f"unknown task '{value}'"
    hint = _closest(value, choices)
    if hint:
        msg += f"; closest: {', '.join(hint)}"
    msg += f" ({len(choices)} task configs in cfgs/task/)"
    try:
        from drq import tasks

        tasks.resolve_task(value)
        msg += f"; '{value}' is a dm_control task: run it with task_name={value} (and a preset=...)"
    except Exception:  # noqa: BLE001 -- not a suite name either (or drq.tasks unavailable): nothing to add
        pass
    return msg


def _check_task_name(value: str) -> None:
    try:
        from drq import tasks
    except ImportError:  # pragma: no cover -- the env module is part of the package
        return
    for v in value.split(",") if "(" not in value else []:
        try:
            tasks.resolve_task(v.strip())
        except ValueError as error:
            raise ConfigError(str(error).splitlines()[0]) from None


def _flat_keys(node: Any, prefix: str = "") -> set[str]:
    keys: set[str] = set()
    if isinstance(node, dict):
        for k, v in node.items():
            path = f"{prefix}.{k}" if prefix else str(k)
            keys.add(path)
            keys |= _flat_keys(v, path)
    return keys


def _compose(overrides: list[str], config_dir: Path) -> Any:
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    return OmegaConf.to_container(cfg, resolve=False)


def check_overrides(argv: list[str], config_dir: Path = CONFIG_DIR) -> None:
    """Raise :class:`ConfigError` (one line) for the first bad override in ``argv`` (``sys.argv[1:]``)."""
    parsed = [_split(o) for o in _overrides(argv)]
    parsed = [(p, k, v) for p, k, v in parsed if not (k == "hydra" or k.startswith("hydra.") or k.startswith("hydra/"))]
    group_overrides = []
    for prefix, key, value in parsed:
        if key in GROUPS and value is not None:
            _check_group(key, value, config_dir)
            group_overrides.append(f"{key}={value.split(',')[0].strip()}" if "(" not in value else None)
        elif key == "task_name" and value is not None:
            _check_task_name(value)
    try:
        base = _compose([g for g in group_overrides if g], config_dir)
        known = _flat_keys(base)
    except Exception as error:  # noqa: BLE001 -- turn any composition failure into one line
        raise ConfigError(f"invalid configuration: {_first_line(error)}") from None
    for prefix, key, value in parsed:
        if value and key.rsplit(".", 1)[-1] == "stddev_schedule" and re.match(r"^\s*(step_)?linear\(", value):
            # hydra would read linear(...) as one of its own grammar functions and fail with a multi-line message
            raise ConfigError(f"quote the schedule for hydra: {key}='{value}' (single quotes inside the argument; "
                              f"in a shell: \"{key}='{value}'\")")
        if key in GROUPS or prefix in ("+", "++"):
            continue
        if key not in known:
            hint = _closest(key, sorted(known))
            closest = f"; closest: {', '.join(hint)}" if hint else ""
            raise ConfigError(f"unknown config key '{key}'{closest} (all keys: cfgs/config.yaml and cfgs/agent/)")
    plain = [
        (f"{p}{k}={v}" if v is not None else f"{p}{k}")
        for p, k, v in parsed
        if v is None or not _is_sweep_or_function(v)
    ]
    try:
        composed = _compose(plain, config_dir)
    except Exception as error:  # noqa: BLE001
        raise ConfigError(f"invalid override: {_first_line(error)}") from None
    for prefix, key, value in parsed:
        if prefix or key in GROUPS or value is None or _is_sweep_or_function(value):
            continue
        _check_type(key, _lookup(base, key), _lookup(composed, key))
    from drq.precision import PRECISIONS, check_precision
    from drq.compiling import COMPILE_MODES, check_compile_mode

    # the library's own validators decide (compile=true / false are accepted there); this only words the message
    for key, choices, check in (("precision", PRECISIONS, check_precision),
                                ("compile", COMPILE_MODES, check_compile_mode)):
        value = _lookup(composed, key)
        try:
            check(value)
        except ValueError:
            raise ConfigError(f"{key} must be one of {', '.join(choices)}; got {value!r}") from None
    from drq.trainer import resolve_eval_workers

    try:
        resolve_eval_workers(_lookup(composed, "eval_workers"), 1)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    from drq import stop_signals

    raw = [v for p, k, v in parsed if k == "stop_signals" and v is not None]  # a list has commas: not composed above
    try:
        stop_signals.parse(raw[-1].strip("[]") if raw else _lookup(composed, "stop_signals"))
    except ValueError as error:
        raise ConfigError(str(error)) from None
    if _lookup(composed, "cuda_graphs") is True:
        _check_cuda_graphs_device(str(_lookup(composed, "device")))


def _check_cuda_graphs_device(device: str) -> None:
    import torch

    from drq.trainer import resolve_device

    available = torch.cuda.is_available()
    if available and resolve_device(device).startswith("cuda"):
        return
    why = f"device={device}" if available else "no CUDA device is available"
    raise ConfigError(f"cuda_graphs=true needs a CUDA device ({why}); use cuda_graphs=false, or device=auto / "
                      "device=cuda on a machine with a GPU")


_TYPE_NAMES = {bool: "true or false", int: "an integer", float: "a number"}
_MIXED_TYPE_KEYS = {"fast_render"}  # false | no_msaa | no_shadows: checked by drq.env with the valid choices


def _lookup(node: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _check_type(key: str, default: Any, new: Any) -> None:
    """A number-valued key given a string (``batch_size=abc``) -> ConfigError; ``null`` is always allowed."""
    if new is None or default is None or type(default) not in _TYPE_NAMES or key in _MIXED_TYPE_KEYS:
        return
    ok = isinstance(new, type(default)) and not (type(default) is int and isinstance(new, bool))
    if type(default) is float and isinstance(new, int) and not isinstance(new, bool):
        ok = True
    if not ok:
        raise ConfigError(f"{key} expects {_TYPE_NAMES[type(default)]}, got {new!r}")


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


def exit_on_bad_overrides(argv: list[str] | None = None, config_dir: Path = CONFIG_DIR) -> None:
    """Print ``drq: <message>`` to stderr and exit with status 2 if :func:`check_overrides` rejects ``argv``."""
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("--help", "-h", "--hydra-help") for a in argv):
        return
    try:
        check_overrides(argv, config_dir)
        from drq.launcher_checks import check_launcher

        check_launcher(argv, config_dir)
    except ConfigError as error:
        print(f"drq: {error}", file=sys.stderr)
        sys.exit(EXIT_CODE)
