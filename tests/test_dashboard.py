"""drq.analysis.dashboard: the panel spec is complete and offline; saving fails with one clear message."""
from __future__ import annotations

import json
import socket
import sys

import pytest
from conftest import run_module_as_main

from drq.analysis import dashboard
from drq.analysis import health as health_report

# The agents' metric names, copied from docs/architecture.md (the contract), not from the code under test.
AGENT_METRICS = ("actor_logprob", "actor_entropy", "actor_loss", "critic_loss", "critic_q1", "critic_q2",
                 "critic_target_q", "batch_reward", "actor_std", "actor_saturation", "actor_log_det_jacobian",
                 "encoder_grad_norm", "actor_grad_norm", "critic_grad_norm", "alpha", "alpha_loss", "target_entropy")
SECTIONS = ("Log-prob & entropy vs target", "α", "Saturation & Jacobian", "Std", "Q values", "Grad norms",
            "Eval return", "Eval videos")


def keys_by_section(spec: dict) -> dict[str, set[str]]:
    return {s["title"]: {k for p in s["panels"] for k in p["keys"]} for s in spec["sections"]}


def test_spec_has_the_sections_in_reading_order():
    spec = dashboard.build_spec()
    assert tuple(s["title"] for s in spec["sections"]) == SECTIONS
    assert spec["x_axis"] == "frame"
    assert all(p["title"] for s in spec["sections"] for p in s["panels"])


def test_spec_panels_carry_the_right_keys():
    keys = keys_by_section(dashboard.build_spec())
    assert {"health/actor_logprob", "health/actor_entropy", "health/target_entropy"} <= keys[SECTIONS[0]]
    assert "health/alpha" in keys["α"]
    assert {"health/actor_saturation", "health/actor_log_det_jacobian"} <= keys["Saturation & Jacobian"]
    assert keys["Std"] == {"health/actor_std"}
    assert {"health/critic_q1", "health/critic_q2", "health/critic_target_q"} <= keys["Q values"]
    assert keys["Grad norms"] == {"health/encoder_grad_norm", "health/actor_grad_norm", "health/critic_grad_norm"}
    assert keys["Eval return"] == {"eval/episode_reward"}
    assert keys["Eval videos"] == {"video/eval"}  # drq.run.sinks: run.log({"video/eval": wandb.Video(...)})
    videos = dashboard.build_spec()["sections"][-1]["panels"]
    assert [p["kind"] for p in videos] == ["media"]


def test_every_agent_metric_has_a_panel_and_no_key_is_invented():
    all_keys = set().union(*keys_by_section(dashboard.build_spec()).values())
    assert {f"health/{m}" for m in AGENT_METRICS} <= all_keys
    assert {k for k in all_keys if k.startswith("health/")} == {f"health/{m}" for m in AGENT_METRICS}
    # drq.run.sinks logs agent.histograms under histograms/<name>
    assert {"histograms/actor_logprob", "histograms/abs_pre_tanh"} <= all_keys


def test_offline_png_panels_are_on_the_dashboard_too():
    all_keys = set().union(*keys_by_section(dashboard.build_spec()).values())
    for title, names, _ in health_report.PANELS:
        prefix = "eval/" if title == "eval return" else "health/"
        assert {prefix + n for n in names} <= all_keys, title


def test_dry_run_prints_json_without_network(monkeypatch, capsys):
    def no_network(*args, **kwargs):
        raise AssertionError("dry run opened a socket")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    assert dashboard.main(["--entity", "me", "--project", "drq", "--title", "walker", "--dry-run"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["entity"] == "me" and printed["project"] == "drq" and printed["title"] == "walker"
    assert printed["sections"] == dashboard.build_spec("walker")["sections"]


def test_missing_workspaces_package_is_one_message_with_the_pin(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "wandb_workspaces", None)
    monkeypatch.setitem(sys.modules, "wandb_workspaces.workspaces", None)
    monkeypatch.setitem(sys.modules, "wandb_workspaces.reports.v2", None)
    assert dashboard.main(["--entity", "me", "--project", "drq"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and dashboard.WORKSPACES_PIN in err and "me/drq" in err


def test_network_error_is_one_message(monkeypatch, capsys):
    def unreachable(spec, entity, project):
        raise ConnectionError("api.wandb.ai unreachable")

    monkeypatch.setattr(dashboard, "save_workspace", unreachable)
    assert dashboard.main(["--entity", "me", "--project", "drq"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == ["drq.analysis.dashboard: could not create the workspace in me/drq: ConnectionError: "
                                "api.wandb.ai unreachable"]


def test_workspace_model_matches_the_spec():
    pytest.importorskip("wandb_workspaces")
    spec = dashboard.build_spec()
    model = json.loads(dashboard.to_workspace(spec, "me", "drq")._to_model().spec.model_dump_json(
        by_alias=True, exclude_none=True))
    sections = {s["name"]: s for s in model["section"]["panelBankConfig"]["sections"]}
    for section in spec["sections"]:
        built = sections[section["title"]]["panels"]
        assert len(built) == len(section["panels"])
        for panel, got in zip(section["panels"], built):
            assert got["config"]["chartTitle"] == panel["title"]
            if panel["kind"] == "line":
                assert got["config"]["xAxis"] == "frame" and got["config"]["metrics"] == panel["keys"]
            else:
                assert got["config"]["mediaKeys"] == panel["keys"]


def test_cli_dry_run_as_main():
    code, out, err = run_module_as_main("drq.analysis.dashboard", "--entity", "e", "--project", "p", "--dry-run")
    assert code == 0, err
    assert len(json.loads(out)["sections"]) == len(SECTIONS)
