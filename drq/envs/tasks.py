"""Task names: DrQ-v2's 24 benchmark tasks plus every ``domain_task`` of the dm_control suite.

A name is ``<domain>_<task>`` with the suite's own spelling (``point_mass_easy``, ``ball_in_cup_catch``,
``humanoid_CMU_run``); matching ignores case. Two extra names come from DrQ-v2:

- ``cup_catch`` is ``ball_in_cup/catch``;
- ``reach_duplo`` is not in the suite but in ``dm_control.manipulation`` (Kinova arm reaching a Duplo brick).
  It resolves to ``("manipulation", "reach_duplo")``; ``drq.envs.pixels`` loads ``manipulation.load('reach_duplo_features')``
  and renders pixels itself from the arena camera ``front_close`` (camera 0), which gives exactly the pixels of
  ``reach_duplo_vision``'s observation.

The suite list is written out here (it is dm_control 1.0.50's ``suite.ALL_TASKS``; ``tests/test_tasks.py`` checks it
against the installed dm_control) so that resolving a name needs no dm_control import and thus no GL backend.
"""

from __future__ import annotations

import difflib
from pathlib import Path

MANIPULATION_DOMAIN = "manipulation"

SUITE_TASKS: tuple[tuple[str, str], ...] = (
    ("acrobot", "swingup"), ("acrobot", "swingup_sparse"),
    ("ball_in_cup", "catch"),
    ("cartpole", "balance"), ("cartpole", "balance_sparse"), ("cartpole", "swingup"), ("cartpole", "swingup_sparse"),
    ("cartpole", "two_poles"), ("cartpole", "three_poles"),
    ("cheetah", "run"),
    ("dog", "stand"), ("dog", "walk"), ("dog", "trot"), ("dog", "run"), ("dog", "fetch"),
    ("finger", "spin"), ("finger", "turn_easy"), ("finger", "turn_hard"),
    ("fish", "upright"), ("fish", "swim"),
    ("hopper", "stand"), ("hopper", "hop"),
    ("humanoid", "stand"), ("humanoid", "walk"), ("humanoid", "run"), ("humanoid", "run_pure_state"),
    ("humanoid_CMU", "stand"), ("humanoid_CMU", "walk"), ("humanoid_CMU", "run"),
    ("lqr", "lqr_2_1"), ("lqr", "lqr_6_2"),
    ("manipulator", "bring_ball"), ("manipulator", "bring_peg"), ("manipulator", "insert_ball"),
    ("manipulator", "insert_peg"),
    ("pendulum", "swingup"),
    ("point_mass", "easy"), ("point_mass", "hard"),
    ("quadruped", "walk"), ("quadruped", "run"), ("quadruped", "escape"), ("quadruped", "fetch"),
    ("reacher", "easy"), ("reacher", "hard"),
    ("stacker", "stack_2"), ("stacker", "stack_4"),
    ("swimmer", "swimmer6"), ("swimmer", "swimmer15"),
    ("walker", "stand"), ("walker", "walk"), ("walker", "run"),
)  # fmt: skip

ALIASES: dict[str, tuple[str, str]] = {
    "cup_catch": ("ball_in_cup", "catch"),
    "reach_duplo": (MANIPULATION_DOMAIN, "reach_duplo"),
}

DRQV2_TASKS: tuple[str, ...] = (
    "acrobot_swingup", "cartpole_balance", "cartpole_balance_sparse", "cartpole_swingup", "cartpole_swingup_sparse",
    "cheetah_run", "cup_catch", "finger_spin", "finger_turn_easy", "finger_turn_hard", "hopper_hop", "hopper_stand",
    "humanoid_run", "humanoid_stand", "humanoid_walk", "pendulum_swingup", "quadruped_run", "quadruped_walk",
    "reach_duplo", "reacher_easy", "reacher_hard", "walker_run", "walker_stand", "walker_walk",
)  # fmt: skip

_REGISTRY: dict[str, tuple[str, str]] = {f"{domain}_{task}": (domain, task) for domain, task in SUITE_TASKS}
_REGISTRY.update(ALIASES)
_BY_LOWER_NAME: dict[str, str] = {name.lower(): name for name in _REGISTRY}

TASK_NAMES: tuple[str, ...] = tuple(sorted(_REGISTRY))

_CAMERA_BY_DOMAIN: dict[str, int] = {"quadruped": 2}

OWN_ACTION_BOUNDS_DOMAINS = frozenset({"lqr", MANIPULATION_DOMAIN, "quadruped"})
"""The domains whose action spec is not [-1, 1] in every dimension (dm_control 1.0.50; tests/test_tasks.py checks it
against the installed dm_control): every other task's bounds are known without loading it (``drq.policy`` reads
snapshots from before the ``env`` record with it)."""


class UnknownTaskError(ValueError):
    """A task name that is neither a DrQ-v2 task nor a dm_control suite ``domain_task``."""


def resolve_task(name: str) -> tuple[str, str]:
    """Map a task name to ``(domain, task)`` for ``suite.load`` (or ``("manipulation", "reach_duplo")``).

    Raises :class:`UnknownTaskError` naming the bad value and the closest valid names.
    """
    canonical = _BY_LOWER_NAME.get(name.lower()) if isinstance(name, str) else None
    if canonical is None:
        raise UnknownTaskError(_unknown_task_message(name))
    return _REGISTRY[canonical]


def default_camera(domain: str) -> int:
    """Camera id DrQ-v2 renders from: 2 for quadruped (a tracking camera), 0 for every other domain."""
    return _CAMERA_BY_DOMAIN.get(domain, 0)


def _unknown_task_message(name: object) -> str:
    candidates = difflib.get_close_matches(str(name).lower(), list(_BY_LOWER_NAME), n=5, cutoff=0.6)
    if candidates:
        suggestion = "closest names: " + ", ".join(_BY_LOWER_NAME[c] for c in candidates)
    else:
        suggestion = "DrQ-v2 tasks: " + ", ".join(DRQV2_TASKS)
    return f"unknown task {name!r}; {suggestion} (all {len(TASK_NAMES)} names: drq.envs.tasks.TASK_NAMES)"


# MuJoCo's default offscreen framebuffer (``<visual><global offwidth offheight>``): a render larger than it fails
MUJOCO_OFFSCREEN = (640, 480)


def framebuffer_side(name: str) -> int | None:
    """The largest square picture (H = W, pixels) the task's model can render: ``min(offwidth, offheight)`` of its
    offscreen framebuffer (480 for every suite domain but dog's 1080), read from the installed dm_control's XML
    without importing it. None where the task or the file is unknown (nothing to check)."""
    import importlib.util
    import re

    try:
        domain, _ = resolve_task(name)
        spec = importlib.util.find_spec("dm_control")
    except (ValueError, ImportError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    if domain == MANIPULATION_DOMAIN:  # composed by mjcf; the arena sets no framebuffer
        return min(MUJOCO_OFFSCREEN)
    xml = Path(list(spec.submodule_search_locations)[0]) / "suite" / f"{domain}.xml"
    try:
        text = xml.read_text()
    except OSError:
        return None
    width, height = MUJOCO_OFFSCREEN
    for tag in re.findall(r"<global\b[^>]*>", text):
        found = dict(re.findall(r'(offwidth|offheight)\s*=\s*"(\d+)"', tag))
        width, height = int(found.get("offwidth", width)), int(found.get("offheight", height))
    return min(width, height)
