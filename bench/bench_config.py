"""The run configs benches compose: hydra composition from cfgs/ (as train.py composes), the frame counts a bench
sets itself rounded up to the action repeat in force, and the config check before anything runs.

The config rule (``drq.config.schema``): every ``*_frames`` count is a multiple of ``action_repeat``, since the loop
advances ``action_repeat`` frames per agent step. A bench that derives frame counts from its own flags (``bench/e2e.py
--frames 100``) does not know the action repeat until the config is composed (``preset=debug``: 8; SAC's per-domain
protocol: cartpole 8, cheetah 4, walker 2, ...), so it rounds the counts it composes with :func:`round_up` and says
so in its output. Values the user sets as overrides are never rounded: a bad one is the user's config error (one
line, exit 2: :func:`exit_on_bad_config`).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, Mapping, TypeVar

T = TypeVar("T")

CONFIG_DIR = Path(__file__).resolve().parents[1] / "cfgs"


def compose(overrides: list[str]) -> dict:
    """The resolved config (a nested dict) that ``python train.py <overrides>`` would run with."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = hydra_compose("config", overrides=overrides)
    return OmegaConf.to_container(cfg, resolve=True)


def round_up(counts: Mapping[str, int], action_repeat: int) -> tuple[dict[str, int], dict[str, list[int]]]:
    """``counts`` (frames) rounded up to multiples of ``action_repeat`` (frames per agent step), each at least one
    agent step; and ``{name: [asked, used]}`` for the counts that changed (empty when none did)."""
    used, rounded = {}, {}
    for name, frames in counts.items():
        steps = max(1, -(-int(frames) // action_repeat))  # ceil(frames / action_repeat) agent steps
        used[name] = steps * action_repeat
        if used[name] != frames:
            rounded[name] = [int(frames), used[name]]
    return used, rounded


def rounding_note(prog: str, rounded: Mapping[str, list[int]], action_repeat: int) -> str:
    """One line for stderr naming what :func:`round_up` changed."""
    changes = ", ".join(f"{name} {asked} -> {used}" for name, (asked, used) in rounded.items())
    return f"{prog}: rounded up to multiples of action_repeat={action_repeat} (frames per agent step): {changes}"


def compose_or_exit(prog: str, build: Callable[[], T]) -> T:
    """``build()`` (a bench's config composition); hydra's composition error (an unknown task or group, a malformed
    override) becomes one ``prog: <first line>`` on stderr and exit status 2."""
    try:
        return build()
    except Exception as error:  # noqa: BLE001 -- hydra's composition errors span several lines
        print(f"{prog}: {(str(error).strip() or type(error).__name__).splitlines()[0]}", file=sys.stderr)
        sys.exit(2)


def exit_on_bad_config(prog: str, cfg: Mapping, machine: bool = True) -> None:
    """Exit with status 2 and one ``prog: <violation>`` line each if ``drq.config.schema`` rejects the composed,
    resolved config ``cfg`` (``machine``: also what this machine lacks, e.g. CUDA for ``device=cuda``)."""
    from drq.config import schema as config_schema

    lines = config_schema.check(cfg, machine=machine)
    for line in lines:
        print(f"{prog}: {line}", file=sys.stderr)
    if lines:
        sys.exit(2)
