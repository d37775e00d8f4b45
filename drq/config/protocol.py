"""The run's training protocol in one line, printed by train.py at start.

The protocol is what a paper's numbers depend on: the action repeat, the replay size, the seed phase, the batch, the
learning rate, the n-step targets, the evaluation cadence and the training length. ``agent=sac`` takes DrQ's
per-domain values from ``cfgs/protocol/sac/<task>.yaml`` (selected by ``cfgs/config.yaml``'s defaults); DrQ-v2 takes
its presets'. Counts are shown in frames (the clock users see) and, where the papers state them so, in agent steps.
"""

from __future__ import annotations

from typing import Any, Mapping

from drq.config import schema as config_schema
from drq.config.schema import RunConfig

__all__ = ["protocol_line"]

PROTOCOL_DIR = config_schema.CONFIG_DIR / "protocol"


def protocol_line(cfg: RunConfig | Mapping[str, Any], source: str | None = None) -> str:
    """One line describing ``cfg``'s protocol; ``source`` names the protocol config hydra picked (e.g.
    ``'sac/cartpole_swingup'``), or None when the agent has none for this task (hydra reports an optional choice
    whose file does not exist too, e.g. ``'drqv2/walker_walk'``: it is left out)."""
    cfg = config_schema.as_config(cfg)
    repeat, seed, every = cfg.action_repeat, cfg.num_seed_frames, cfg.eval_every_frames
    name = cfg.agent.name
    if source and not (PROTOCOL_DIR / f"{source}.yaml").is_file():
        source = None
    origin = f"cfgs/agent/{name}.yaml" + (f", cfgs/protocol/{source}.yaml" if source else "")
    return (f"protocol ({origin}, the preset, the task file, overrides): agent={name} task={cfg.task_name} "
            f"action_repeat={repeat} replay_buffer_size={cfg.replay_buffer_size:,} "
            f"num_seed_frames={seed:,} ({seed // repeat:,} agent steps) batch_size={cfg.batch_size} "
            f"lr={cfg.agent.lr} nstep={cfg.nstep} "
            f"eval every {every:,} frames ({every // repeat:,} agent steps) x {cfg.num_eval_episodes} episodes, "
            f"num_train_frames={cfg.num_train_frames:,}")
