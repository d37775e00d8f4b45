"""AsyncEnv: same TimeSteps as the synchronous env, worker errors re-raised, worker reaped on close."""

from __future__ import annotations

import numpy as np
import pytest

from drq.envs.pixels import make_env
from drq.envs.worker import AsyncEnv
from drq.envs.tasks import UnknownTaskError

KWARGS = dict(task="cartpole_swingup", frame_stack=3, action_repeat=2, seed=11, size=32, fast_render="no_shadows")


def test_async_matches_sync_and_reraises_step_errors():
    sync = make_env(**KWARGS)
    with AsyncEnv(**KWARGS) as worker:
        assert worker.observation_shape == sync.observation_shape and worker.action_shape == sync.action_shape
        a, s = worker.reset(), sync.reset()
        assert np.array_equal(a.observation, s.observation) and a.first
        for action in np.random.default_rng(0).uniform(-1, 1, (6, 1)).astype(np.float32):
            worker.step_async(action)
            a, s = worker.step_wait(), sync.step(action)
            assert np.array_equal(a.observation, s.observation)
            assert (a.reward, a.discount, a.first, a.last) == (s.reward, s.discount, s.first, s.last)
            assert np.array_equal(a.action, s.action)
        assert np.array_equal(worker.render(48), sync.render(48))

        with pytest.raises(ValueError, match=r"action must have shape \(1,\)"):
            worker.step(np.zeros(3, np.float32))
        with pytest.raises(RuntimeError, match="without step_wait"):
            worker.step_async(np.zeros(1, np.float32))
            worker.step_async(np.zeros(1, np.float32))
        worker.step_wait()
        assert worker.step(np.zeros(1, np.float32)).observation.shape == (9, 32, 32)  # still usable after errors
        process = worker._process
    assert not process.is_alive() and process.exitcode is not None  # reaped, no zombie
    with pytest.raises(RuntimeError, match="closed"):
        worker.reset()


def test_unknown_task_error_is_reraised_with_message():
    with pytest.raises(UnknownTaskError, match="walker_wlak.*walker_walk"):
        AsyncEnv(task="walker_wlak")
