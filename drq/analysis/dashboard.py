"""``python -m drq.analysis.dashboard --entity E --project P``: a saved wandb workspace with the health panels.

The panel spec is plain data (``build_spec``), built and testable offline; only the final step (``save_workspace``)
talks to the wandb server. ``--dry-run`` prints the spec as JSON and needs no network.

Keys (as ``drq.run.sinks`` logs them, against the ``frame`` metric): ``health/<agent metric>`` for the agent's metrics
(docs/architecture.md), ``eval/episode_reward``, and the constants below for the video and the histograms of
per-sample log-prob and |pre-tanh| (``agent.histograms``).

Saving needs the ``wandb-workspaces`` package (``pip install wandb-workspaces==0.4.13``, or ``wandb[workspaces]``),
which wandb's own ``wandb.apis.workspaces`` wraps.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

X_AXIS = "frame"
EVAL_RETURN_KEY = "eval/episode_reward"
VIDEO_KEY = "video/eval"
HISTOGRAM_KEYS = {"actor_logprob": "histograms/actor_logprob", "abs_pre_tanh": "histograms/abs_pre_tanh"}
WORKSPACES_PIN = "wandb-workspaces==0.4.13"


def _health(*names: str) -> list[str]:
    return [f"health/{name}" for name in names]


def _line(title: str, keys: list[str], *, log_y: bool = False, note: str = "") -> dict[str, Any]:
    return {"title": title, "kind": "line", "keys": keys, "log_y": log_y, "note": note}


def build_spec(title: str = "drq policy health") -> dict[str, Any]:
    """The dashboard as data: ``{"title", "x_axis", "sections": [{"title", "panels": [{"title", "kind", "keys",
    "log_y", "note"}]}]}``. ``kind`` is ``"line"`` (a line plot of every key against ``x_axis``) or ``"media"``
    (a media browser). Section order is the reading order of docs/health.md."""
    sections = [
        {"title": "Log-prob & entropy vs target", "panels": [
            _line("log-prob & entropy vs target", _health("actor_logprob", "actor_entropy", "target_entropy"),
                  note="SAC: entropy should track target_entropy = -|A|. DrQ-v2: follows the std schedule."),
            _line("per-sample log-prob (histogram)", [HISTOGRAM_KEYS["actor_logprob"]]),
        ]},
        {"title": "α", "panels": [
            _line("α (SAC temperature)", _health("alpha"), log_y=True, note="SAC only; DrQ-v2 schedules its std."),
            _line("α loss", _health("alpha_loss")),
        ]},
        {"title": "Saturation & Jacobian", "panels": [
            _line("fraction of action dims with |a| > 0.99", _health("actor_saturation")),
            _line("mean log-det-Jacobian Σ log(1 - tanh² u)", _health("actor_log_det_jacobian")),
            _line("|pre-tanh| (histogram)", [HISTOGRAM_KEYS["abs_pre_tanh"]]),
        ]},
        {"title": "Std", "panels": [_line("policy std", _health("actor_std"))]},
        {"title": "Q values", "panels": [
            _line("Q values", _health("critic_q1", "critic_q2", "critic_target_q")),
            _line("batch reward", _health("batch_reward")),
            _line("losses", _health("critic_loss", "actor_loss")),
        ]},
        {"title": "Grad norms", "panels": [
            _line("grad norms", _health("encoder_grad_norm", "actor_grad_norm", "critic_grad_norm"), log_y=True),
        ]},
        {"title": "Eval return", "panels": [_line("eval return", [EVAL_RETURN_KEY])]},
        {"title": "Eval videos", "panels": [{"title": "eval videos", "kind": "media", "keys": [VIDEO_KEY],
                                             "log_y": False, "note": ""}]},
    ]
    return {"title": title, "x_axis": X_AXIS, "sections": sections}


def to_workspace(spec: dict[str, Any], entity: str, project: str) -> Any:
    """The spec as a ``wandb_workspaces.workspaces.Workspace`` (not saved). Raises ImportError naming the pin."""
    try:
        import wandb_workspaces.reports.v2 as wr
        import wandb_workspaces.workspaces as ws
    except ImportError:
        raise ImportError(f"saving a workspace needs the wandb-workspaces package: pip install '{WORKSPACES_PIN}'"
                          " (or print the spec with --dry-run)") from None
    sections = []
    for section in spec["sections"]:
        panels = []
        for panel in section["panels"]:
            if panel["kind"] == "media":
                panels.append(wr.MediaBrowser(title=panel["title"], media_keys=panel["keys"], num_columns=2))
            else:
                panels.append(wr.LinePlot(title=panel["title"], x=spec["x_axis"], y=panel["keys"],
                                          log_y=panel["log_y"] or None))
        sections.append(ws.Section(name=section["title"], panels=panels, is_open=True,
                                   panel_settings=ws.SectionPanelSettings(x_axis=spec["x_axis"])))
    return ws.Workspace(entity=entity, project=project, name=spec["title"], sections=sections,
                        settings=ws.WorkspaceSettings(x_axis=spec["x_axis"]))


def has_wandb_credentials() -> bool:
    """Whether wandb has an API key without prompting (wandb.Api() prompts on a terminal when it has none)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        from wandb.sdk.lib import wbauth

        host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")
        return wbauth.authenticate_session(host=host, source="drq.analysis.dashboard", prompt=False) is not None
    except Exception:  # another wandb version: let wandb.Api() decide (it raises when it cannot prompt)
        return True


def save_workspace(spec: dict[str, Any], entity: str, project: str) -> str:
    """Create the saved workspace on the wandb server; returns its URL. The only step that needs network."""
    workspace = to_workspace(spec, entity, project)
    if not has_wandb_credentials():
        raise PermissionError("no wandb API key configured: run `wandb login` or set WANDB_API_KEY")
    workspace.save()
    return str(workspace.url)


def main(argv: Sequence[str] | None = None) -> int:
    """Exit status 0 on success, 1 when the workspace could not be created (one message on stderr)."""
    parser = argparse.ArgumentParser(prog="python -m drq.analysis.dashboard",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--entity", required=True, help="wandb entity (user or team)")
    parser.add_argument("--project", required=True, help="wandb project holding the runs")
    parser.add_argument("--title", default="drq policy health", help="name of the saved workspace")
    parser.add_argument("--dry-run", action="store_true", help="print the panel spec as JSON; no network")
    args = parser.parse_args(argv)

    spec = build_spec(args.title)
    if args.dry_run:
        print(json.dumps({"entity": args.entity, "project": args.project, **spec}, indent=2, ensure_ascii=False))
        return 0
    try:
        url = save_workspace(spec, args.entity, args.project)
    except Exception as err:  # network, auth, missing package, server-side validation: one clear line
        print(f"drq.analysis.dashboard: could not create the workspace in {args.entity}/{args.project}: "
              f"{type(err).__name__}: {err}", file=sys.stderr)
        return 1
    print(f"saved workspace {args.title!r}: {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
