"""Train an agent on a DeepMind Control task from pixels.

    python train.py                                  # DrQ-v2 on walker_walk (easy preset)
    python train.py task=cheetah_run agent=sac       # any cfgs/task/*.yaml, agent drqv2 | sac
    python train.py preset=debug task=cartpole_swingup wandb.mode=disabled   # a seconds-long smoke run
    python train.py hydra.run.dir=exp_local/my_run   # run again with the same dir to resume

Configuration: cfgs/config.yaml (all keys), cfgs/agent/, cfgs/preset/, cfgs/task/. See README "Configuration".
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from drq.config_errors import exit_on_bad_overrides


@hydra.main(config_path="cfgs", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    from drq import rendering, snapshot, trainer
    from drq.tasks import UnknownTaskError

    from drq.protocol import protocol_line

    run_dir = HydraConfig.get().runtime.output_dir
    config = OmegaConf.to_container(cfg, resolve=True)
    print(protocol_line(config, HydraConfig.get().runtime.choices.get("protocol")), flush=True)
    try:
        trainer.run(config, run_dir)
    except trainer.TrainingInterrupted as stop:
        print(f"drq: {stop}", file=sys.stderr)
        sys.exit(130)
    except (snapshot.SnapshotError, trainer.NonFiniteMetricError, rendering.RenderingUnavailable,
            UnknownTaskError) as error:  # fmt: skip
        print(f"drq: {error}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    exit_on_bad_overrides(sys.argv[1:])
    main()
