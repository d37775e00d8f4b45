"""The run's training protocol in one line, printed by train.py at start: what a paper's numbers depend on."""

from __future__ import annotations

from typing import Any, Mapping

from drq.config.schema import CONFIG_DIR, RunConfig, as_config


def protocol_line(cfg: RunConfig | Mapping[str, Any], source: str | None = None) -> str:
    """One line describing ``cfg``'s protocol; ``source``: the protocol config hydra picked (``'sac/cheetah_run'``),
    left out when no such file exists (hydra reports an optional choice without a file too) or None."""
    cfg = as_config(cfg)
    repeat, seed, every, name = cfg.action_repeat, cfg.num_seed_frames, cfg.eval_every_frames, cfg.agent.name
    found = source and (CONFIG_DIR / "protocol" / f"{source}.yaml").is_file()
    return (f"protocol (cfgs/agent/{name}.yaml{f', cfgs/protocol/{source}.yaml' if found else ''}, the preset, the "
            f"task file, overrides): agent={name} task={cfg.task_name} action_repeat={repeat} "
            f"replay_buffer_size={cfg.replay_buffer_size:,} num_seed_frames={seed:,} ({seed // repeat:,} agent steps) "
            f"batch_size={cfg.batch_size} lr={cfg.agent.lr} nstep={cfg.nstep} eval every {every:,} frames "
            f"({every // repeat:,} agent steps) x {cfg.num_eval_episodes} episodes, "
            f"num_train_frames={cfg.num_train_frames:,}")
