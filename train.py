"""Train an agent from pixels on a DeepMind Control task or a Gymnasium environment.

    python train.py                                  # DrQ-v2 on walker_walk (easy preset)
    python train.py task=cheetah_run agent=sac       # any cfgs/task/*.yaml, agent drqv2 | sac
    python train.py task=gym gym.id=InvertedPendulum-v5   # a Gymnasium env (or gym.id=my_pkg.my_module:MyEnv)
    python train.py preset=debug task=cartpole_swingup wandb.mode=disabled   # a seconds-long smoke run
    python train.py hydra.run.dir=exp_local/my_run   # run again with the same dir to resume

Configuration: cfgs/config.yaml (all keys), cfgs/agent/, cfgs/preset/, cfgs/task/. Every key, its unit and allowed values: docs/configuration.md.
"""

from __future__ import annotations

import sys

from drq.machine import stop_signals
from drq.machine.process_tuning import tune_process

tune_process()  # before torch loads: huge pages, passive OpenMP waiting, glibc keeping freed memory

# A single run handles the stop signals from its first moment (a SIGTERM while torch and hydra import still gives a
# snapshot and exit 143); main() narrows them to cfg.stop_signals. A sweep's launcher process keeps the defaults.
EARLY_STOP: stop_signals.StopSignals | None = None
if not {"-m", "--multirun"} & set(sys.argv[1:]):
    EARLY_STOP = stop_signals.StopSignals(stop_signals.parse(stop_signals.DEFAULT)).install()

import hydra  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from drq.config.errors import exit_on_bad_overrides  # noqa: E402


@hydra.main(config_path="cfgs", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    from drq.config import schema as config_schema
    from drq.envs import rendering
    from drq.run import resume_changes
    from drq.run import lock as run_dir_lock
    from drq.run import snapshot
    from drq.run import trainer
    from drq.envs.tasks import UnknownTaskError
    from drq.envs.gym_ids import GymIdError
    from drq.envs.gym_pixels import GymEnvError

    from drq.config.protocol import protocol_line

    run_dir = HydraConfig.get().runtime.output_dir
    try:  # checked before hydra ran (exit_on_bad_overrides); again here for sweep jobs, now into the typed config
        config = config_schema.load(OmegaConf.to_container(cfg, resolve=True), machine=True)
    except config_schema.ConfigError as error:
        for line in str(error).splitlines():
            print(f"drq: {line}", file=sys.stderr)
        sys.exit(2)
    print(protocol_line(config, HydraConfig.get().runtime.choices.get("protocol")), flush=True)
    try:
        trainer.run(config, run_dir, stop=EARLY_STOP)
    except trainer.TrainingInterrupted as stop:
        print(f"drq: {stop}", file=sys.stderr)
        stop.chain()  # a handler installed before ours (submitit's requeue on SLURM) gets the signal too
        sys.exit(stop.exit_code)  # 128 + signal: 130 for SIGINT, 143 for SIGTERM
    except trainer.EnvKeptFailing as error:  # an environment failed again and again: snapshot written, exit 3
        print(f"drq: {error}", file=sys.stderr)
        sys.exit(error.exit_code)
    except (run_dir_lock.RunDirLocked, resume_changes.ResumeRefused) as error:
        print(f"drq: {error}", file=sys.stderr)
        sys.exit(2)
    except (snapshot.SnapshotError, snapshot.RunDirError, trainer.NonFiniteMetricError,
            rendering.RenderingUnavailable, UnknownTaskError, GymIdError, GymEnvError) as error:  # fmt: skip
        print(f"drq: {error}", file=sys.stderr)
        sys.exit(1)


def _resume_check(argv: list[str]) -> None:
    from drq.run.resume_changes import refuse_before_hydra  # imports torch: only once the config itself passed

    refuse_before_hydra(argv)


def _env_check(argv: list[str]) -> None:
    from drq.run.env_probe import refuse_before_hydra  # a Gymnasium env built once, in a worker process

    refuse_before_hydra(argv)


if __name__ == "__main__":
    exit_on_bad_overrides(sys.argv[1:], also=[_resume_check, _env_check])
    main()
