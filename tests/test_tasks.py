"""Task registry and GL-backend selection (no rendering needed except one real probe of a bogus backend)."""

from __future__ import annotations

import pytest

from drq.envs import rendering
from drq.envs import tasks


def test_suite_list_matches_installed_dm_control():
    rendering.setup_rendering()
    from dm_control import suite

    assert set(tasks.SUITE_TASKS) == set(suite.ALL_TASKS)
    for domain, task in suite.ALL_TASKS:
        assert tasks.resolve_task(f"{domain}_{task}") == (domain, task)


def test_the_domains_with_their_own_action_bounds_are_those_of_the_installed_dm_control():
    """OWN_ACTION_BOUNDS_DOMAINS (what drq.policy reads for snapshots from before the env record) against each
    domain's action spec: one task per domain, the manipulation task included."""
    import numpy as np

    rendering.setup_rendering()
    from dm_control import manipulation, suite

    first = {}
    for domain, task in suite.ALL_TASKS:
        first.setdefault(domain, task)
    specs = {domain: suite.load(domain, task).action_spec() for domain, task in first.items()}
    specs[tasks.MANIPULATION_DOMAIN] = manipulation.load("reach_duplo_features", seed=0).action_spec()
    own = {d for d, spec in specs.items() if not (np.all(spec.minimum == -1.0) and np.all(spec.maximum == 1.0))}
    assert own == tasks.OWN_ACTION_BOUNDS_DOMAINS


def test_drqv2_names_and_aliases():
    assert len(tasks.DRQV2_TASKS) == 24 and set(tasks.DRQV2_TASKS) <= set(tasks.TASK_NAMES)
    assert tasks.resolve_task("cup_catch") == ("ball_in_cup", "catch")
    assert tasks.resolve_task("ball_in_cup_catch") == ("ball_in_cup", "catch")
    assert tasks.resolve_task("point_mass_easy") == ("point_mass", "easy")
    assert tasks.resolve_task("cartpole_balance_sparse") == ("cartpole", "balance_sparse")
    assert tasks.resolve_task("finger_turn_hard") == ("finger", "turn_hard")
    assert tasks.resolve_task("humanoid_cmu_run") == ("humanoid_CMU", "run")
    assert tasks.resolve_task("reach_duplo") == ("manipulation", "reach_duplo")


def test_unknown_task_lists_closest_names():
    with pytest.raises(tasks.UnknownTaskError) as info:
        tasks.resolve_task("walker_wlak")
    assert isinstance(info.value, ValueError)
    message = str(info.value)
    assert "'walker_wlak'" in message and "walker_walk" in message
    assert "cheetah_run" not in message  # only close names, not the whole list
    with pytest.raises(tasks.UnknownTaskError, match="acrobot_swingup"):  # nothing close: the DrQ-v2 list
        tasks.resolve_task("zzzz")


def test_default_camera():
    assert tasks.default_camera("quadruped") == 2
    assert tasks.default_camera("walker") == 0
    assert tasks.default_camera("manipulation") == 0


class FakeProbe:
    def __init__(self, working: set[str]):
        self.working, self.calls = working, []

    def __call__(self, backend: str) -> tuple[bool, str]:
        self.calls.append(backend)
        return backend in self.working, f"lib for {backend} missing"


def test_backend_respects_mujoco_gl():
    probe = FakeProbe({"osmesa", "egl"})
    assert rendering.select_backend({"MUJOCO_GL": "osmesa"}, probe) == "osmesa"
    assert probe.calls == ["osmesa"]
    trusted = FakeProbe(set())  # already verified by a parent process: no probe at all
    assert rendering.select_backend({"MUJOCO_GL": "egl", "DRQ_MUJOCO_GL_VERIFIED": "egl"}, trusted) == "egl"
    assert trusted.calls == []


def test_backend_order_egl_then_osmesa():
    probe = FakeProbe({"egl", "osmesa"})
    assert rendering.select_backend({}, probe) == "egl" and probe.calls == ["egl"]
    probe = FakeProbe({"osmesa"})
    assert rendering.select_backend({}, probe) == "osmesa" and probe.calls == ["egl", "osmesa"]


def test_no_backend_gives_install_message():
    with pytest.raises(rendering.RenderingUnavailable) as info:
        rendering.select_backend({}, FakeProbe(set()))
    message = str(info.value)
    for needle in ("libegl1", "libgl1-mesa-dri", "libosmesa6", "MUJOCO_GL", "lib for egl missing", "lib for osmesa"):
        assert needle in message
    with pytest.raises(rendering.RenderingUnavailable, match="MUJOCO_GL=osmesa was set"):
        rendering.select_backend({"MUJOCO_GL": "osmesa"}, FakeProbe({"egl"}))


def test_setup_exports_choice(monkeypatch):
    monkeypatch.setattr(rendering, "probe_backend", FakeProbe({"osmesa"}))
    environ: dict[str, str] = {}
    assert rendering.setup_rendering(environ) == "osmesa"
    assert environ["MUJOCO_GL"] == "osmesa"


def test_real_probe_reports_failure():
    ok, reason = rendering.probe_backend("no_such_backend")
    assert not ok and "no_such_backend" in reason
