"""A trainer leaves nothing behind: a constructor that fails part way, and a ``close`` whose ``wandb.finish`` raises,
still release the run dir's lock, stop the environment worker and put back the process-wide torch settings.

In-process and without training (each test builds one debug-preset trainer, ~2 s with its env worker)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def debug_config(**overrides) -> dict:
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(ROOT / "cfgs"), version_base="1.3"):
        cfg = compose("config", overrides=["preset=debug", "task=cartpole_swingup", "wandb.mode=disabled",
                                           "save_video=false", *(f"{k}={v}" for k, v in overrides.items())])  # fmt: skip
    return OmegaConf.to_container(cfg, resolve=True)


def lock_is_free(run_dir: Path) -> bool:
    """Another ``flock`` on the run dir succeeds (flock locks belong to the open file, so this works in-process)."""
    from drq.run import lock as run_dir_lock

    try:
        run_dir_lock.acquire(run_dir).release()
    except run_dir_lock.RunDirLocked:
        return False
    return True


class AgentFailed(Exception):
    """Stands for any error while building the agent (after the lock and the env worker)."""


def test_a_failed_constructor_releases_the_lock_stops_the_worker_and_restores_threads(tmp_path, monkeypatch):
    from drq.run import build, trainer

    workers = []
    real_make_train_env = build.make_train_env

    def make_train_env(cfg):
        workers.append(real_make_train_env(cfg))
        return workers[-1]

    def failing_agent(*args, **kwargs):
        raise AgentFailed

    monkeypatch.setattr(build, "make_train_env", make_train_env)
    monkeypatch.setattr(build, "make_agent_from_config", failing_agent)
    threads = torch.get_num_threads()
    with pytest.raises(AgentFailed) as failed:  # `failed` keeps the half-built trainer alive (its traceback's frames)
        trainer.Trainer(debug_config(async_env="true", num_threads=threads + 1), tmp_path, say=lambda s: None)
    (worker,) = workers
    assert type(worker).__name__ == "AsyncEnv", "the test must build a real env worker"
    assert failed.value is not None and lock_is_free(tmp_path)
    assert not worker._process.is_alive(), "the env worker still runs"
    assert torch.get_num_threads() == threads


def test_close_releases_the_lock_and_closes_the_envs_when_wandb_finish_raises(tmp_path, monkeypatch):
    from drq.run import trainer

    threads = torch.get_num_threads()
    t = trainer.Trainer(debug_config(async_env="false", num_threads=threads + 1), tmp_path, say=lambda s: None)
    assert torch.get_num_threads() == threads + 1 and not lock_is_free(tmp_path)
    closed = []
    real_close = t.train_env.close
    monkeypatch.setattr(t.train_env, "close", lambda: closed.append("train") or real_close())

    def finish(exit_code=0):
        raise OSError("wandb: network unreachable")

    monkeypatch.setattr(t.wandb, "finish", finish)
    with pytest.raises(OSError, match="network unreachable"):
        t.close()
    assert closed == ["train"] and lock_is_free(tmp_path)
    assert torch.get_num_threads() == threads  # process-wide: put back for whoever runs next in this process
