"""drq.run.health (the detector, the monitor's once-per-episode warnings) and drq.analysis.health (the PNG report, CLI).

The synthetic streams are written here from what healthy and broken SAC / DrQ-v2 runs look like (numbers in the shapes
of the agents' metrics, docs/architecture.md), independently of the detector. Each problem is also checked on the
healthy side of its threshold, so the tests fail if the detector flags everything or nothing.

To check the report on a recorded run, drop its metrics.jsonl as ``tests/data/health_<name>.jsonl`` (keep it small),
or list paths in ``DRQ_HEALTH_RECORDED`` (os.pathsep-separated): ``test_report_from_recorded_run`` picks them up.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import run_module_as_main

from drq.run import health
from drq.analysis import health as health_report
from drq.run.health import THRESHOLDS, HealthMonitor, diagnose

FRAMES_PER_LOG = 2000
RECORDED_RUNS = sorted((Path(__file__).parent / "data").glob("health_*.jsonl")) + [
    Path(p) for p in os.environ.get("DRQ_HEALTH_RECORDED", "").split(os.pathsep) if p]


# ------------------------------------------------------------------------------------------- synthetic streams


def sac_stream(n: int = 200, action_dim: int = 6, seed: int = 0) -> list[dict]:
    """A healthy SAC run: entropy falls from above its target (-|A|) onto it while alpha decays, log-prob ~ -entropy
    (about +1 nat/dim at the target), a few saturated dims, Q rising to ~150 (action repeat 4: max 400)."""
    rng = np.random.default_rng(seed)
    a = action_dim
    out = []
    for i in range(n):
        t = i / n
        entropy = -a + 0.6 * a * math.exp(-5 * t) + rng.normal(0, 0.3)
        q = 150 * (1 - math.exp(-4 * t)) + 1 + rng.normal(0, 2)
        out.append({
            "frame": (i + 1) * FRAMES_PER_LOG, "step": (i + 1) * FRAMES_PER_LOG // 4,
            "actor_entropy": entropy, "target_entropy": -float(a), "actor_logprob": -entropy + rng.normal(0, 0.5),
            "alpha": 0.1 * math.exp(-3 * t) + 0.005, "alpha_loss": rng.normal(0, 0.01),
            "actor_std": 0.9 * math.exp(-2 * t) + 0.15, "actor_saturation": 0.05 + 0.25 * t + rng.normal(0, 0.02),
            "actor_log_det_jacobian": a * (-0.3 - 1.5 * t) + rng.normal(0, 0.2),
            "critic_q1": q, "critic_q2": q + rng.normal(0, 1), "critic_target_q": q + rng.normal(0, 1),
            "batch_reward": 1.5 * t, "actor_loss": -q, "critic_loss": abs(rng.normal(1, 0.3)),
            "encoder_grad_norm": 5 + abs(rng.normal(0, 1)), "actor_grad_norm": 0.5 + abs(rng.normal(0, 0.1)),
            "critic_grad_norm": 20 + abs(rng.normal(0, 5)),
        })
    return out


def drqv2_stream(n: int = 200, action_dim: int = 6, seed: int = 1) -> list[dict]:
    """A healthy DrQ-v2 run: std scheduled linearly 1.0 -> 0.1, so log-prob per dim ~ -1.42 - log(std) and entropy
    per dim ~ 1.42 + log(std) follow the schedule; |a| > 0.99 for ~30% of dims (clipped noise); Q to ~180
    (action repeat 2: max 200)."""
    rng = np.random.default_rng(seed)
    a = action_dim
    out = []
    for i in range(n):
        t = i / n
        std = max(0.1, 1.0 - 0.9 * t / 0.8)
        gauss = 0.5 * math.log(2 * math.pi * math.e) + math.log(std)
        q = 180 * (1 - math.exp(-4 * t)) + 1 + rng.normal(0, 2)
        out.append({
            "frame": (i + 1) * FRAMES_PER_LOG, "step": (i + 1) * FRAMES_PER_LOG // 2,
            "actor_entropy": a * gauss - 0.2 + rng.normal(0, 0.1), "actor_logprob": -a * gauss + rng.normal(0, 0.4),
            "actor_std": std, "actor_saturation": 0.3 + rng.normal(0, 0.03),
            "actor_log_det_jacobian": a * (-0.2 - 1.0 * t) + rng.normal(0, 0.2),
            "critic_q1": q, "critic_q2": q + rng.normal(0, 1), "critic_target_q": q + rng.normal(0, 1),
            "batch_reward": 1.5 * t, "actor_loss": -q, "critic_loss": abs(rng.normal(1, 0.3)),
            "encoder_grad_norm": 5 + abs(rng.normal(0, 1)), "actor_grad_norm": 0.5 + abs(rng.normal(0, 0.1)),
            "critic_grad_norm": 20 + abs(rng.normal(0, 5)),
        })
    return out


def set_from(stream: list[dict], start: int, stop: int | None = None, **values) -> list[dict]:
    """Overwrite metrics over records [start, stop); a value may be a function of the offset j = i - start."""
    for i in range(start, len(stream) if stop is None else stop):
        for key, value in values.items():
            stream[i][key] = value(i - start) if callable(value) else value
    return stream


def verdicts_of(stream: list[dict], agent: str, **ctx) -> dict[str, str]:
    return {signal: v.status for signal, v in diagnose(stream, agent, **ctx).items()}


ALL_HEALTHY = {s: "healthy" for s in health.SIGNALS}


# ------------------------------------------------------------------------------------------- detector


def test_healthy_sac_stream_is_not_flagged():
    assert verdicts_of(sac_stream(), "sac", action_repeat=4) == ALL_HEALTHY


def test_healthy_drqv2_stream_is_not_flagged():
    verdicts = diagnose(drqv2_stream(), "drqv2", action_dim=6, action_repeat=2)
    assert {s: v.status for s, v in verdicts.items()} == ALL_HEALTHY
    assert "scheduled" in verdicts["entropy"].detail


@pytest.mark.parametrize("seed", range(5))
def test_healthy_streams_stay_healthy_across_seeds(seed):
    assert verdicts_of(sac_stream(seed=seed), "sac", action_repeat=4) == ALL_HEALTHY
    assert verdicts_of(drqv2_stream(seed=seed), "drqv2", action_dim=6, action_repeat=2) == ALL_HEALTHY


def test_sac_action_dim_is_read_from_target_entropy():
    ctx = health.make_context("sac", sac_stream(n=3, action_dim=4))
    assert ctx.action_dim == 4


def test_sac_entropy_collapse_far_below_target():
    # 1.5 nats/dim below target from record 100 on, alpha shrinking; log-prob follows (+2.5 nats/dim: not a blow-up)
    stream = set_from(sac_stream(), 100, actor_entropy=-15.0, actor_logprob=15.0, alpha=1e-3)
    verdicts = diagnose(stream, "sac", action_repeat=4)
    assert verdicts["entropy"].status == "entropy_collapse"
    assert verdicts["entropy"].frame == stream[100 + THRESHOLDS.sustain_logs - 1]["frame"]
    assert verdicts["entropy"].ongoing
    assert {s: v.status for s, v in verdicts.items() if s != "entropy"} == {
        s: "healthy" for s in health.SIGNALS if s != "entropy"}


def test_sac_entropy_gap_threshold_both_sides():
    # 0.8 nats/dim below target is within tolerance, 1.2 is a collapse
    within = set_from(sac_stream(), 100, actor_entropy=-6.0 - 0.8 * 6, actor_logprob=10.8)
    beyond = set_from(sac_stream(), 100, actor_entropy=-6.0 - 1.2 * 6, actor_logprob=13.2)
    assert verdicts_of(within, "sac", action_repeat=4)["entropy"] == "healthy"
    assert verdicts_of(beyond, "sac", action_repeat=4)["entropy"] == "entropy_collapse"


def test_sac_brief_dip_is_not_a_collapse_but_a_sustained_one_is():
    k = THRESHOLDS.sustain_logs
    brief = set_from(sac_stream(), 100, 100 + k - 1, actor_entropy=-20.0)
    sustained = set_from(sac_stream(), 100, 100 + k, actor_entropy=-20.0)
    assert verdicts_of(brief, "sac", action_repeat=4)["entropy"] == "healthy"
    verdict = diagnose(sustained, "sac", action_repeat=4)["entropy"]
    assert verdict.status == "entropy_collapse" and not verdict.ongoing


def test_sac_tiny_alpha_with_falling_entropy_is_a_collapse():
    # entropy only 0.5 nat/dim below target (under the gap bound), but falling while alpha ~ 0
    stream = set_from(sac_stream(), 100, alpha=1e-6, actor_entropy=lambda j: -6.0 - 0.05 * j)
    assert verdicts_of(stream, "sac", action_repeat=4)["entropy"] == "entropy_collapse"
    # tiny alpha with entropy *above* target is the controller doing its job
    above = set_from(sac_stream(), 100, alpha=1e-6, actor_entropy=lambda j: -5.0 - 0.005 * j)
    assert verdicts_of(above, "sac", action_repeat=4)["entropy"] == "healthy"


def test_drqv2_entropy_follows_schedule_and_tiny_std_is_a_collapse():
    stream = set_from(drqv2_stream(), 120, actor_std=1e-3)
    assert verdicts_of(stream, "drqv2", action_dim=6, action_repeat=2)["entropy"] == "entropy_collapse"


def test_sac_saturation_fraction():
    stream = set_from(sac_stream(), 100, actor_saturation=0.97)
    verdicts = verdicts_of(stream, "sac", action_repeat=4)
    assert verdicts["saturation"] == "saturation"
    assert verdicts["q_values"] == verdicts["finite"] == "healthy"
    assert verdicts_of(set_from(sac_stream(), 100, actor_saturation=0.85), "sac", action_repeat=4)[
        "saturation"] == "healthy"


def test_drqv2_saturation_through_the_jacobian():
    # clipped noise keeps |a| > 0.99 near half the dims however saturated the mean is: the Jacobian tells
    # -6 nats/dim of log(1 - tanh^2 u) is |u| ~ 3.7 for the mean's pre-tanh value
    stream = set_from(drqv2_stream(), 100, actor_saturation=0.52, actor_log_det_jacobian=-6.0 * 6)
    assert verdicts_of(stream, "drqv2", action_dim=6, action_repeat=2)["saturation"] == "saturation"
    milder = set_from(drqv2_stream(), 100, actor_saturation=0.52, actor_log_det_jacobian=-4.0 * 6)
    assert verdicts_of(milder, "drqv2", action_dim=6, action_repeat=2)["saturation"] == "healthy"


def test_logprob_blowup_above_bound():
    # SAC log-prob runs away to +10 nats/dim (the Jacobian term of saturated samples, or a std at its floor)
    stream = set_from(sac_stream(), 100, actor_logprob=lambda j: 6.0 + min(j, 20) * 2.7)
    verdicts = diagnose(stream, "sac", action_repeat=4)
    assert verdicts["log_prob"].status == "logprob_blowup"
    assert "nats/dim" in verdicts["log_prob"].detail


def test_logprob_fast_rise_below_the_bound():
    # from +1 to +5 nats/dim within 5 logs: under the absolute bound (6) but rising 4 nats/dim
    stream = set_from(sac_stream(), 100, actor_logprob=lambda j: 6.0 + min(j, 5) * 4.8)
    assert verdicts_of(stream, "sac", action_repeat=4)["log_prob"] == "logprob_blowup"
    # the same climb spread over 100 logs is the policy sharpening, not a blow-up ... and it stays under the bound
    slow = set_from(sac_stream(), 100, actor_logprob=lambda j: 6.0 + j * 0.24)
    assert verdicts_of(slow, "sac", action_repeat=4)["log_prob"] == "healthy"


def test_logprob_needs_the_action_dim_for_drqv2():
    verdict = diagnose(drqv2_stream(), "drqv2", action_repeat=2)["log_prob"]
    assert verdict.status == "insufficient_data" and "action dim" in verdict.detail


def test_q_bound_is_reward_scale_over_one_minus_discount():
    # DMC: reward <= 1 per env step -> <= action_repeat per agent step -> Q <= action_repeat / (1 - discount)
    ctx = health.make_context("drqv2", action_dim=6, action_repeat=2, discount=0.99)
    assert ctx.q_theory_max(THRESHOLDS) == pytest.approx(200.0)
    under = set_from(drqv2_stream(), 150, critic_q1=390.0, critic_q2=390.0)  # bound = 2 x 200 = 400
    over = set_from(drqv2_stream(), 150, critic_q1=410.0, critic_q2=410.0)
    assert verdicts_of(under, "drqv2", action_dim=6, action_repeat=2)["q_values"] == "healthy"
    assert verdicts_of(over, "drqv2", action_dim=6, action_repeat=2)["q_values"] == "q_divergence"


def test_q_exponential_growth_flagged_before_the_bound():
    # x1.25 per log from 30: |Q| passes the growth floor (200 for repeat 4) and quadruples within 10 logs
    stream = set_from(sac_stream(), 100, critic_q1=lambda j: 30 * 1.25**j, critic_q2=lambda j: 30 * 1.25**j,
                      critic_target_q=lambda j: 30 * 1.25**j)
    verdict = diagnose(stream, "sac", action_repeat=4)["q_values"]
    assert verdict.status == "q_divergence"
    crosses_bound = next(r["frame"] for r in stream if r["critic_q1"] > 800)
    assert verdict.frame < crosses_bound


def test_nan_is_non_finite_at_its_frame():
    stream = sac_stream()
    stream[150]["critic_loss"] = float("nan")
    verdicts = diagnose(stream, "sac", action_repeat=4)
    assert verdicts["finite"].status == "non_finite"
    assert verdicts["finite"].frame == stream[150]["frame"]
    assert "critic_loss" in verdicts["finite"].detail
    assert {s: v.status for s, v in verdicts.items() if s != "finite"} == {
        s: "healthy" for s in health.SIGNALS if s != "finite"}


def test_inf_in_an_eval_record_is_non_finite():
    stream = sac_stream() + [{"section": "eval", "frame": 999, "episode_reward": float("inf")}]
    assert verdicts_of(stream, "sac", action_repeat=4)["finite"] == "non_finite"


def test_too_few_logs_is_insufficient_data():
    verdicts = verdicts_of(sac_stream(n=THRESHOLDS.sustain_logs - 1), "sac", action_repeat=4)
    assert verdicts["entropy"] == verdicts["log_prob"] == verdicts["q_values"] == "insufficient_data"


def test_unknown_agent_names_the_choices():
    with pytest.raises(ValueError, match="'ppo'.*drqv2, sac"):
        diagnose(sac_stream(n=3), "ppo")


def test_thresholds_are_documented_in_one_place():
    source = Path(health.__file__).read_text()
    block = source[source.index("class HealthThresholds"): source.index("THRESHOLDS = HealthThresholds()")]
    comments = "\n".join(line for line in block.splitlines() if line.strip().startswith("#"))
    for name in THRESHOLDS.__dataclass_fields__:
        before = block[: block.index(f"    {name}:")].rstrip().splitlines()
        assert before[-1].strip().startswith("#") or f"`{name}`" in comments, f"{name} has no comment"


# ------------------------------------------------------------------------------------------- monitor


def run_monitor(stream: list[dict], agent: str, **ctx) -> list[tuple[int, str]]:
    monitor = HealthMonitor(agent, **ctx)
    out = []
    for record in stream:
        metrics = {k: v for k, v in record.items() if k not in ("frame", "step")}
        out += [(record["frame"], line) for line in monitor.update(record["frame"], metrics)]
    return out


def test_monitor_is_silent_on_healthy_runs():
    assert run_monitor(sac_stream(), "sac", action_repeat=4) == []
    assert run_monitor(drqv2_stream(), "drqv2", action_dim=6, action_repeat=2) == []


def test_monitor_warns_once_per_episode_of_trouble():
    k, rearm = THRESHOLDS.sustain_logs, THRESHOLDS.rearm_logs
    stream = sac_stream(n=200)
    set_from(stream, 50, 80, actor_entropy=-20.0)                      # episode 1: 30 logs
    set_from(stream, 80 + rearm + 5, 150, actor_entropy=-20.0)          # episode 2 after a long healthy spell
    warnings = run_monitor(stream, "sac", action_repeat=4)
    assert [frame for frame, _ in warnings] == [stream[50 + k - 1]["frame"], stream[80 + rearm + 5 + k - 1]["frame"]]
    assert all("entropy_collapse" in line for _, line in warnings)


def test_monitor_does_not_rearm_on_a_short_recovery():
    stream = sac_stream(n=200)
    # the k - 1 logs that build up the second episode are not yet a problem, so they count towards re-arming too
    gap = THRESHOLDS.rearm_logs - THRESHOLDS.sustain_logs
    set_from(stream, 50, 80, actor_entropy=-20.0)
    set_from(stream, 80 + gap, 120, actor_entropy=-20.0)
    assert len(run_monitor(stream, "sac", action_repeat=4)) == 1


def test_monitor_warns_on_nan_immediately():
    stream = sac_stream(n=60)
    stream[40]["critic_loss"] = float("nan")
    warnings = run_monitor(stream, "sac", action_repeat=4)
    assert len(warnings) == 1 and warnings[0][0] == stream[40]["frame"]
    assert "non_finite" in warnings[0][1] and "critic_loss" in warnings[0][1]


def test_monitor_accepts_tensor_like_values():
    class Scalar:  # stands in for a 0-dim tensor: float() works, nothing else
        def __init__(self, v):
            self.v = v

        def __float__(self):
            return float(self.v)

    monitor = HealthMonitor("sac", action_repeat=4)
    for record in sac_stream(n=20):
        assert monitor.update(record["frame"], {k: Scalar(v) for k, v in record.items() if k != "frame"}) == []


# ------------------------------------------------------------------------------------------- report (CLI)


def write_run_dir(root: Path, health_records: list[dict], *, eval_every: int = 20,
                  config: str | None = None) -> Path:
    """A run directory with a metrics.jsonl as the trainer writes it: health lines, plus train and eval lines."""
    root.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, record in enumerate(health_records):
        lines.append({"section": "health", "total_time": float(i), **record})
        if i % eval_every == eval_every - 1:
            frame = record["frame"]
            lines.append({"section": "train", "frame": frame, "step": frame // 2, "total_time": float(i),
                          "episode_reward": 10.0 * i, "episode_length": 500, "fps": 90.0})
            lines.append({"section": "eval", "frame": frame, "step": frame // 2, "total_time": float(i),
                          "episode_reward": 4.0 * i, "episode_length": 500})
    (root / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    if config is not None:
        (root / ".hydra").mkdir(exist_ok=True)
        (root / ".hydra" / "config.yaml").write_text(config)
    return root


def assert_is_report_png(path: Path) -> None:
    import matplotlib.image

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(path)
    assert image.shape[0] > 400 and image.shape[1] > 800
    assert image[..., :3].std() > 0.05  # not a blank canvas


def test_report_png_and_verdicts_for_a_sac_run(tmp_path, capsys):
    stream = set_from(sac_stream(), 120, actor_entropy=-20.0, actor_logprob=20.0)
    run_dir = write_run_dir(tmp_path / "run", stream, config="action_repeat: 4\ndiscount: 0.99\n")
    assert health_report.main([str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert_is_report_png(run_dir / "health.png")
    assert "agent sac" in out and "action repeat 4" in out
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ")}
    assert set(lines) == set(health.SIGNALS) | {"eval", "restarts"}
    assert "entropy_collapse" in lines["entropy"] and "healthy" in lines["q_values"]
    assert lines["restarts"].split() == ["restarts", "none"]


def test_report_shows_the_env_restarts(tmp_path, capsys):
    """The trainer's ``restart`` lines (drq.run.restarts): counted per env, the last one's frame and reason."""
    run_dir = write_run_dir(tmp_path / "run", sac_stream(n=40))
    restarts = [{"section": "restart", "frame": 800, "step": 400, "total_time": 1.0, "env": "train env",
                 "reason": "train env worker (pid 7) was killed by SIGKILL during step", "worker_restarts": 1},
                {"section": "restart", "frame": 1600, "step": 800, "total_time": 2.0, "env": "eval env 1",
                 "reason": "eval env 1 raised PhysicsError: Physics state is invalid.", "worker_restarts": 2}]
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.writelines(json.dumps(r) + "\n" for r in restarts)
    assert health_report.main([str(run_dir), "--agent", "sac"]) == 0
    (line,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith("  restarts")]
    assert line.split(None, 1)[1] == ("2 (train env: 1, eval env 1: 1); the last at frame 1,600: eval env 1 raised "
                                      "PhysicsError: Physics state is invalid.")
    assert_is_report_png(run_dir / "health.png")


def test_report_for_a_drqv2_run_with_out_and_strict(tmp_path, capsys):
    stream = set_from(drqv2_stream(), 150, critic_q1=5000.0, critic_q2=5000.0)
    run_dir = write_run_dir(tmp_path / "run", stream)
    out_png = tmp_path / "elsewhere.png"
    code = health_report.main([str(run_dir), "--out", str(out_png), "--action-dim", "6", "--action-repeat", "2",
                        "--strict"])
    assert code == 1
    assert_is_report_png(out_png)
    out = capsys.readouterr().out
    assert "agent drqv2" in out and "q_divergence" in out


def test_report_reads_agent_action_dim_and_repeat_from_run_json_and_an_old_run_dir_from_its_hydra_config(
        tmp_path, capsys, monkeypatch):
    """run.json's run record (as the trainer writes it) gives agent, |A|, action repeat and discount, with no flag and
    no physics loaded; a run dir from before that record reads .hydra/config.yaml, and its |A| is unknown ('?', the
    per-dimension checks say so) rather than guessed from the task."""
    import builtins

    from drq.run import provenance

    real_import, imported = builtins.__import__, []

    def recording_import(name, *args, **kwargs):
        imported.append(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", recording_import)
    monkeypatch.setattr(health_report, "write_report_png", lambda *args, **kwargs: None)  # the PNG: tested above
    config = {"task_name": "walker_walk", "seed": 1, "agent": {"name": "drqv2"}, "action_repeat": 2,
              "discount": 0.9, "frame_stack": 3}  # fmt: skip
    new = write_run_dir(tmp_path / "new", drqv2_stream(action_dim=6))
    provenance.record_session(new, {"frame": 0}, run=provenance.run_record(config, (9, 84, 84), (6,)))
    assert health_report.read_run_config(new) == {"agent": "drqv2", "action_dim": 6, "action_repeat": 2,
                                                  "discount": 0.9}  # fmt: skip
    assert health_report.main([str(new)]) == 0
    assert "(agent drqv2, |A| = 6, action repeat 2, discount 0.9)" in capsys.readouterr().out

    old = write_run_dir(tmp_path / "old", drqv2_stream(action_dim=6),
                        config="task_name: walker_walk\naction_repeat: 2\ndiscount: 0.9\nagent:\n  name: drqv2\n")
    assert health_report.read_run_config(old) == {"agent": "drqv2", "action_repeat": 2, "discount": 0.9}
    assert health_report.main([str(old)]) == 0
    out = capsys.readouterr().out
    assert "(agent drqv2, |A| = ?, action repeat 2, discount 0.9)" in out and "action dimension unknown" in out
    assert health_report.main([str(old), "--action-dim", "6"]) == 0
    assert "|A| = 6" in capsys.readouterr().out
    assert not [name for name in imported if name.startswith("dm_control")]


@pytest.mark.parametrize("recorded", RECORDED_RUNS, ids=lambda p: p.stem)
def test_report_from_recorded_run(tmp_path, recorded, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "metrics.jsonl").write_bytes(recorded.read_bytes())
    assert health_report.main([str(run_dir)]) == 0
    assert_is_report_png(run_dir / "health.png")
    assert "wrote" in capsys.readouterr().out


@pytest.mark.parametrize("content", [None, "", "\n", '{"section": "train", "frame": 1, "episode_reward": 1.0}\n'])
def test_cli_unusable_input_is_one_message(tmp_path, capsys, content):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    if content is not None:
        (run_dir / "metrics.jsonl").write_text(content)
    assert health_report.main([str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert str(run_dir / "metrics.jsonl") in err and len(err.strip().splitlines()) == 1


def test_cli_torn_last_line_is_skipped_but_a_broken_middle_line_is_not(tmp_path, capsys):
    run_dir = write_run_dir(tmp_path / "run", sac_stream(n=30))
    path = run_dir / "metrics.jsonl"
    path.write_text(path.read_text() + '{"section": "health", "fra')
    assert health_report.main([str(run_dir)]) == 0
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:3] + ["{broken"] + lines[3:]) + "\n")
    assert health_report.main([str(run_dir)]) == 2
    assert "line 4" in capsys.readouterr().err


def test_cli_missing_run_dir_exits_nonzero_without_traceback(tmp_path):
    missing = tmp_path / "no_such_run"
    code, out, err = run_module_as_main("drq.analysis.health", str(missing))
    assert code == 2
    assert str(missing) in err and "Traceback" not in err + out


def test_old_command_line_names_the_new_one(tmp_path):
    code, out, err = run_module_as_main("drq.run.health", str(tmp_path))
    assert code == 2
    assert err.strip() == "drq.run.health is the detector only; the report is: python -m drq.analysis.health RUN_DIR"


def test_detector_on_a_real_saturated_drqv2_run():
    """tests/data/health_drqv2_cartpole_balance_saturated.jsonl: a real run on this machine (cartpole_balance, DrQ-v2,
    lr 3e-4, batch 64, action repeat 8, bf16) whose actor's tanh saturated (pre-tanh mean ~15, actor gradient gone)
    and whose eval return fell from 348 to 136 and stayed there. The detector must name saturation, and only that."""
    path = Path(__file__).parent / "data" / "health_drqv2_cartpole_balance_saturated.jsonl"
    verdicts = diagnose(health_report.load_metrics(path), "drqv2", action_dim=1, action_repeat=8, discount=0.99)
    assert verdicts["saturation"].status == "saturation"
    assert verdicts["saturation"].frame == 10_000
    assert {k: v.status for k, v in verdicts.items() if k != "saturation"} == {
        "finite": "healthy", "entropy": "healthy", "log_prob": "healthy", "q_values": "healthy"}


def test_detector_on_a_real_healthy_sac_run():
    """tests/data/health_sac_cartpole_balance_healthy.jsonl: a real SAC run on this machine (cartpole_balance, batch 64,
    action repeat 8, bf16) that went from 389 to 965 eval return in 24k frames. Every signal must read healthy."""
    path = Path(__file__).parent / "data" / "health_sac_cartpole_balance_healthy.jsonl"
    verdicts = diagnose(health_report.load_metrics(path), "sac", action_repeat=8, discount=0.99)
    assert {k: v.status for k, v in verdicts.items()} == {
        "finite": "healthy", "entropy": "healthy", "log_prob": "healthy", "saturation": "healthy",
        "q_values": "healthy"}


# ------------------------------------------------------------------------------------------- the analysis wing


@pytest.mark.slow
def test_training_path_does_not_import_the_analysis_wing():
    """train.py and every module of the training path load without drq.analysis (nor matplotlib, rliable,
    wandb-workspaces): the report, the sweep report and the dashboard only read a run's files. A fresh interpreter,
    because this test session has imported the wing already."""
    root = Path(__file__).resolve().parents[1]
    code = (
        "import importlib.util, sys\n"
        "def wing():\n"
        "    return sorted(m for m in sys.modules if m.startswith('drq.analysis')\n"
        "                  or m.split('.')[0] in ('matplotlib', 'rliable', 'wandb_workspaces'))\n"
        "spec = importlib.util.spec_from_file_location('train_entry', 'train.py')\n"
        "spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
        "import drq.run.trainer, drq.agents, drq.envs.pixels, drq.envs.worker, drq.run.sinks, drq.run.snapshot, drq.run.health, replay\n"
        "print(wing())\n"
        "import drq.analysis.health\n"  # the check can fail: importing the wing shows up
        "print(wing())\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    training, planted = result.stdout.strip().splitlines()
    assert training == "[]"
    assert "drq.analysis.health" in planted
