"""The pre-run memory and machine checks (drq/config/footprint.py, the render-size rule, the local Ray's resources): each
value that cannot be allocated is one line naming the value to change and the largest that fits, before anything
starts.

References: ``replay.FrameReplay.nbytes`` (what the buffer really allocates per slot), ``drq.agents.networks.conv_output_hw``
and the agents' real parameter counts, the installed dm_control's framebuffer (a model loaded and rendered), and the
suggested value itself (the check passes with it and fails just above it).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from drq.config import schema
from drq.config import launchers as launcher_checks
from drq.config import footprint as run_footprint
from drq.config.errors import ConfigError, check_overrides
from drq.config.footprint import Machine, on_machine
from drq.machine import memory

ROOT = Path(__file__).resolve().parents[1]
GB = 10**9
DEBUG = ["preset=debug", "task=cartpole_balance"]


def compose(*overrides: str) -> dict:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(ROOT / "cfgs"), version_base="1.3"):
        return OmegaConf.to_container(hydra_compose("config", overrides=list(overrides)), resolve=True)


@pytest.fixture(scope="module")
def configs() -> dict[str, dict]:
    return {"debug": compose(*DEBUG), "walker": compose(), "cheetah": compose("task=cheetah_run")}


def values(cfg: dict, **changes) -> dict:
    """The checked values (dotted keys) of ``cfg`` with ``changes``."""
    lines, v = schema._check(cfg, machine=False)
    assert not lines, lines
    return {**v, **changes}


def machine(ram_gb: float = 24, cores: int = 2, disk_gb: float = 100, gpu_gb: float | None = None) -> Machine:
    """A made-up machine: ``ram_gb`` usable and as the allocation limit (as DRQ_MEMORY_LIMIT does)."""
    return Machine(usable_ram=int(ram_gb * GB), ram_source="test", allocation_limit=int(ram_gb * GB),
                   allocation_source="test", cores=cores, disk_free=int(disk_gb * GB), disk_path="/runs",
                   gpu_free=lambda device: None if gpu_gb is None else int(gpu_gb * GB),
                   cuda_present=gpu_gb is not None)  # fmt: skip


def one_line(lines: list[str]) -> str:
    assert len(lines) == 1 and "\n" not in lines[0], lines
    return lines[0]


def suggested(line: str, key: str) -> int:
    return int(line.split(f"the largest {key} that fits: ")[1].split()[0].rstrip(";,"))


def rule(v: dict, on: Machine) -> list[str]:
    with on_machine(on):
        return [f"{k}={schema.show(val)}: {allowed} ({why})" for k, val, allowed, why in
                run_footprint.memory_rule(v) + run_footprint.eval_workers_rule(v)]  # fmt: skip


# ------------------------------------------------------------------------------------------ the estimate itself
def test_slot_bytes_and_transitions_match_the_replay_and_the_run():
    import numpy as np
    from replay import FrameReplay

    from drq.agents.networks import conv_output_hw

    v = {"image_size": 48, "replay_buffer_size": 100, "nstep": 2, "frame_stack": 3}
    buffer = FrameReplay(100, (3, 48, 48), (run_footprint.ACTION_DIM_BOUND,), frame_stack=3, nstep=2)
    assert buffer.num_slots == run_footprint.replay_slots(v)
    assert buffer.nbytes == buffer.num_slots * run_footprint.slot_bytes(v)
    for size in (15, 48, 84, 100, 480):
        assert run_footprint.conv_output_side(size) == conv_output_hw(size, size)[0]
    # preset=debug task=cartpole_balance: its snapshot's replay holds total=260 (2000 frames / 8 + 10 first steps)
    v = {"num_train_frames": 2000, "action_repeat": 8, "max_episode_frames": 200}
    assert run_footprint.replay_adds(v) == 260 + 1  # one to spare
    # the default walker_walk: 1.1M frames at action repeat 2 -> about 551k transitions, 11.7-11.8 GB at 84x84
    v = {"num_train_frames": 1_100_000, "action_repeat": 2, "max_episode_frames": None}
    assert run_footprint.replay_adds(v) == 550_000 + 1_100 + 1
    assert np.isclose(551_101 * run_footprint.slot_bytes({"image_size": 84}), 11.8e9, rtol=0.01)


@pytest.mark.parametrize("agent", ["drqv2", "sac"])
def test_network_parameters_are_the_agents_own(agent):
    from drq.agents import make_agent

    cfg = compose(f"agent={agent}", "image_size=64", "feature_dim=20", "hidden_dim=64")
    v = values(cfg)
    a = run_footprint.ACTION_DIM_BOUND
    built = make_agent(agent, obs_shape=(9, 64, 64), action_shape=(a,), device="cpu", precision="fp32",
                       **schema.load(cfg).agent.kwargs())  # fmt: skip
    trained = {id(p): p.numel() for m in (built.actor, built.critic, getattr(built, "encoder", None)) if m is not None
               for p in m.parameters()}  # fmt: skip
    target = sum(p.numel() for p in built.critic_target.parameters())
    ours_trained, ours_target = run_footprint.network_params(v)
    assert abs(ours_trained - sum(trained.values())) / sum(trained.values()) < 0.1
    assert abs(ours_target - target) / target < 0.1


def test_the_framebuffer_side_is_what_mujoco_renders():
    from drq.envs import tasks
    from drq.envs.pixels import make_env

    assert tasks.framebuffer_side("cartpole_balance") == 480 and tasks.framebuffer_side("dog_run") == 1080
    env = make_env("cartpole_balance", frame_stack=1, action_repeat=1, seed=0, size=48)
    try:
        assert env.render(480).shape == (480, 480, 3)
        with pytest.raises(ValueError, match="framebuffer"):
            env.render(482)
    finally:
        env.close()


# ------------------------------------------------------------------------------------------ one line per bad value
def test_two_billion_transitions_name_the_largest_replay_that_fits(monkeypatch, configs):
    """Live, with this machine's figures under DRQ_MEMORY_LIMIT=24G and the frames in RAM: RAM and one allocation are
    the limits, and they stay put on a busy machine. ``replay_storage=auto`` may put the frames on disk, whose free
    space moves while other work writes (CI's own files did): that case runs on a made-up machine."""
    monkeypatch.setenv("DRQ_MEMORY_LIMIT", "24G")
    in_ram = [*DEBUG, "replay_storage=ram"]
    with pytest.raises(ConfigError) as info:
        check_overrides([*in_ram, "replay_buffer_size=2000000000"])
    line = one_line(str(info.value).splitlines())
    assert line.startswith("replay_buffer_size=2000000000: needs 13.8 TB of one allocation (DRQ_MEMORY_LIMIT=24G)")
    best = suggested(line, "replay_buffer_size")
    check_overrides([*in_ram, f"replay_buffer_size={best}"])  # the suggestion passes ...
    with pytest.raises(ConfigError, match="replay_buffer_size"):
        check_overrides([*in_ram, f"replay_buffer_size={int(best * 1.01)}"])  # ... and it is the largest (to 1%)

    auto = values(configs["debug"], replay_buffer_size=2_000_000_000)
    assert auto["replay_storage"] == "auto"
    for disk_gb, on_disk in ((100, True), (1, False)):  # the disk holds more than RAM, or less
        line = one_line(rule(auto, machine(ram_gb=24, disk_gb=disk_gb)))
        assert line.startswith("replay_buffer_size=2000000000: needs 13.8 TB of one allocation (test) but 24.0 GB")
        best = suggested(line, "replay_buffer_size")
        assert rule({**auto, "replay_buffer_size": best}, machine(ram_gb=24, disk_gb=disk_gb)) == []
        assert rule({**auto, "replay_buffer_size": int(best * 1.01)}, machine(ram_gb=24, disk_gb=disk_gb)) != []
        said = f"(with its frames on disk, where replay_storage=auto puts them: {best * 6912 / GB:.1f} GB of "
        assert (said in line) == on_disk, line
    assert "99.5 GB of 100.0 GB free at /runs)" in rule(auto, machine(ram_gb=24, disk_gb=100))[0]


def test_default_walker_on_a_small_machine(configs):
    v = values(configs["walker"], replay_storage="ram")
    assert rule(v, machine(ram_gb=24)) == []  # ~550k transitions, 11.8 GB + 4 GB: fits on a 24 GB machine
    line = one_line(rule(v, machine(ram_gb=8)))  # its 1M slots are one 21.2 GB allocation; 15.8 GB by the end
    assert line.startswith("replay_buffer_size=1000000: needs 21.2 GB of one allocation (test) but 8.0 GB is available")
    assert "(551,101 frames of 3x84x84)" in line and "learner 2.9 GB (batch_size=512: 1.7 GB)" in line
    best = suggested(line, "replay_buffer_size")
    assert rule({**v, "replay_buffer_size": best}, machine(ram_gb=8)) == []
    assert rule({**v, "replay_buffer_size": int(best * 1.01)}, machine(ram_gb=8)) != []


def test_a_medium_preset_names_disk_storage_where_the_schema_has_it(configs):
    v = values(configs["cheetah"], replay_storage="ram")  # 3.1M frames: the 1M replay fills (21.4 GB)
    before_the_key = {k: x for k, x in v.items() if k != "replay_storage"}  # a config made before the key: ram
    line = one_line(rule(before_the_key, machine(ram_gb=23)))
    assert "21.4 GB written by the end (1,000,005 frames of 3x84x84)" in line and "replay_storage=disk" not in line
    line = one_line(rule(v, machine(ram_gb=23)))
    assert line.endswith("or replay_storage=disk (the frames in a file in the run dir: 21.2 GB of 100.0 GB free at "
                         "/runs) (estimated from the config before the run: drq/config/footprint.py)")
    assert rule({**v, "replay_storage": "disk"}, machine(ram_gb=23)) == []
    assert rule({**v, "replay_storage": "auto"}, machine(ram_gb=23)) == []
    line = one_line(rule({**v, "replay_storage": "disk"}, machine(ram_gb=23, disk_gb=10)))  # the frames file and the
    assert "needs 43.4 GB of disk (free at /runs) but 10.0 GB is available" in line  # snapshots' segments: 21.2 + 22.3
    assert "; snapshots 22.3 GB on disk); the largest replay_buffer_size that fits: 214000 (" in line


def test_snapshots_count_on_the_run_dirs_disk(configs):
    """The replay's segment files and snapshot.pt go to the run dir whatever the storage (drq.run.snapshot,
    replay.segments): a disk too small for them is one line before the run, not a warning at each snapshot after hours.
    (The bound on the segments is checked against the files themselves in tests/test_replay_persistence.py.)"""
    v, small = values(configs["walker"], replay_storage="ram"), machine(ram_gb=24, disk_gb=8)
    line = one_line(rule(v, small))  # 551,101 steps written: 11.8 GB of segments by the end
    assert line.startswith("replay_buffer_size=1000000: needs 12.1 GB of disk (free at /runs) but 8.0 GB is available")
    assert "; snapshots 12.1 GB on disk); the largest replay_buffer_size that fits: 333000, or save_replay_in_snapshot="
    "false (snapshots without the replay: a resumed run starts with it empty) (estimated" in line
    best = suggested(line, "replay_buffer_size")
    assert rule({**v, "replay_buffer_size": best}, small) == []
    assert rule({**v, "replay_buffer_size": int(best * 1.01)}, small) != []
    assert rule({**v, "save_replay_in_snapshot": False}, small) == []  # the agent only: 0.2 GB
    assert rule({**v, "save_replay_in_snapshot": False}, machine(ram_gb=24, disk_gb=0.1)) != []
    assert rule({**v, "save_snapshot": False}, machine(ram_gb=24, disk_gb=0)) == []  # nothing written to disk


def test_the_disk_a_run_may_fill(tmp_path, monkeypatch):
    """What the disk check compares with (drq.machine.memory.usable_disk_bytes): the file system's free space (made up
    here: it moves while other work writes), plus what the run dir's snapshots hold already (a resume writes over
    them), shared by a local sweep's jobs at once; DRQ_DISK_LIMIT instead where set."""
    import shutil

    monkeypatch.delenv("DRQ_DISK_LIMIT")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10 * GB, 5 * GB, 5 * GB))
    assert Machine.here(tmp_path / "new").disk_free == 5 * GB  # a new run dir: its nearest existing parent's
    assert Machine.here(tmp_path / "new").disk_path == str(tmp_path)
    for held in (tmp_path / "run", tmp_path / "sweep" / "3"):  # a run dir, and a job folder of a sweep dir
        (held / "replay").mkdir(parents=True)
        (held / "replay" / "seg-000000000000-000000001000.npys").write_bytes(b"x" * 3_000_000)
        (held / "snapshot.pt").write_bytes(b"x" * 1_000_000)
    for run_dir in (tmp_path / "run", tmp_path / "sweep"):
        assert 5 * GB + 4_000_000 <= Machine.here(run_dir).disk_free <= 5 * GB + 4_100_000
    two = Machine.here(tmp_path / "new", jobs=2)
    assert (two.disk_free, two.disk_source) == (5 * GB // 2, "free / 2 sweep jobs at once")
    monkeypatch.setenv("DRQ_DISK_LIMIT", "2G")
    limited = Machine.here(tmp_path / "run")
    assert (limited.disk_free, limited.disk_source) == (2 * 2**30, "DRQ_DISK_LIMIT=2G")
    v = values(compose(*DEBUG), replay_storage="disk", replay_buffer_size=1_000_000)
    assert "of disk (DRQ_DISK_LIMIT=2G at " in one_line(rule(v, limited))


@pytest.mark.parametrize("changes, start", [
    ({"batch_size": 100_000_000, "replay_buffer_size": 200_000_000}, "batch_size=100000000: needs 110.6 TB of RAM"),
    ({"eval_workers": 8, "num_eval_episodes": 8}, ""),  # 8 workers fit in 24 GB
    ({"eval_workers": 8, "num_eval_episodes": 8, "video_size": 480, "max_episode_frames": 1000, "action_repeat": 1},
     ""),
])  # fmt: skip
def test_batch_workers_video_fit_or_name_the_value(configs, changes, start):
    lines = rule(values(configs["debug"], **changes), machine(ram_gb=24))
    if not start:
        assert lines == []
        return
    line = one_line(lines)
    assert line.startswith(start)
    assert "and replay_buffer_size=200000000 needs 1.4 TB of one allocation (test), 24.0 GB available" in line
    best, replay = suggested(line, "batch_size"), int(line.split("at most ")[-1].split()[0])
    assert rule(values(configs["debug"], batch_size=best, replay_buffer_size=replay), machine(ram_gb=24)) == []
    assert rule(values(configs["debug"], batch_size=int(best * 1.01), replay_buffer_size=replay),
                machine(ram_gb=24)) != []  # fmt: skip


def test_eval_workers_beyond_the_cores_and_the_memory(configs):
    v = values(configs["debug"], eval_workers=64, num_eval_episodes=64)
    assert one_line(rule(v, machine(cores=2))).startswith(
        "eval_workers=64: 'auto' or at most 8 on this machine (2 cores: 2 worker processes per core")
    assert rule(v, machine(cores=32, ram_gb=64)) == []  # 64 workers on 32 cores, 64 x 0.3 GB in 64 GB
    line = one_line(rule(v, machine(cores=32, ram_gb=8)))
    assert line.startswith("eval_workers=64: needs ") and "the largest eval_workers that fits: 21" in line


def test_cuda_counts_the_whole_replay_on_the_gpu(configs):
    v = values(configs["walker"], device="cuda", replay_storage="ram")  # torch.empty on a GPU: all 1M slots at once
    line = one_line(rule(v, machine(ram_gb=24, gpu_gb=16)))
    assert line.startswith("replay_buffer_size=1000000: needs 24.0 GB of GPU memory (free) but 16.0 GB is available")
    assert rule(v, machine(ram_gb=24, gpu_gb=40)) == []
    ram = values(configs["walker"], replay_storage="ram")
    assert rule(ram, machine(ram_gb=24, gpu_gb=16)) == [line]  # device=auto with CUDA: the GPU
    assert rule(ram, machine(ram_gb=24)) == []  # device=auto without CUDA: the CPU
    assert rule({**v, "replay_storage": "auto"}, machine(ram_gb=24, gpu_gb=16)) == []  # auto: frames on disk


@pytest.mark.parametrize("argv, expected", [
    ([*DEBUG, "image_size=100000"], "image_size=100000: at most 480 for task_name=cartpole_balance (its offscreen "
     "framebuffer is 480 pixels high or wide) (pixels; MuJoCo cannot render a larger picture)"),
    ([*DEBUG, "video_size=100000"], "video_size=100000: at most 480 for task_name=cartpole_balance"),
    ([*DEBUG, "eval_workers=64", "num_eval_episodes=64"], "eval_workers=64: 'auto' or at most "),
])  # fmt: skip
def test_sizes_that_cannot_be_rendered_or_run_are_one_line(argv, expected):
    with pytest.raises(ConfigError) as info:
        check_overrides(argv)
    assert one_line(str(info.value).splitlines()).startswith(expected)


def test_sweeps_elsewhere_are_checked_where_they_run_and_local_ones_share_the_ram(configs):
    assert launcher_checks.machine(["-m", "hydra/launcher=slurm"]).remote
    assert launcher_checks.machine(["-m", "hydra/launcher=ray_cluster", "hydra.launcher.ray.init.address=h:1"]).remote
    assert not launcher_checks.machine(["-m", "hydra/launcher=ray_cluster"]).remote
    assert not launcher_checks.machine(["hydra/launcher=slurm"]).remote  # a single run runs here
    big = values(configs["debug"], replay_buffer_size=2_000_000_000)
    with on_machine(Machine(usable_ram=GB, allocation_limit=GB, remote=True)):
        assert run_footprint.memory_rule(big) == []
    assert launcher_checks.machine(["-m", "hydra/launcher=local", "seed=1,2,3"], runs=3).jobs == 2  # n_jobs: 2
    assert launcher_checks.machine(["-m", "hydra/launcher=local", "hydra.launcher.n_jobs=8"], runs=3).jobs == 3
    assert launcher_checks.machine(["-m", "seed=1,2,3"], runs=3).jobs == 1  # hydra's basic launcher: one at a time
    assert launcher_checks.machine(["-m", "hydra/launcher=joblib", "seed=1,2,3"], runs=3).jobs == min(
        3, memory.usable_cores())  # joblib's own n_jobs: -1, all cores  # fmt: skip


@pytest.mark.parametrize("name, what", [("DRQ_MEMORY_LIMIT", "the RAM a run may use"),
                                        ("DRQ_DISK_LIMIT", "the disk a run may fill")])
def test_a_bad_memory_or_disk_limit_is_one_line(monkeypatch, name, what):
    monkeypatch.setenv(name, "lots")
    with pytest.raises(ConfigError) as info:
        check_overrides(DEBUG)
    assert one_line(str(info.value).splitlines()) == (
        f"{name}=lots: expected bytes or a size such as 512M, 8G, 1.5T (environment variable: {what})")


# ------------------------------------------------------------------------------------------ a local Ray's resources
def test_a_local_ray_asked_for_what_this_machine_lacks(monkeypatch):
    monkeypatch.setattr(launcher_checks, "_installed", lambda module: True)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    sweep = ["-m", "hydra/launcher=ray_cluster"]
    no_gpu = lambda: (2, 0)  # noqa: E731
    with pytest.raises(ConfigError) as info:
        launcher_checks.check_launcher(sweep, resources=no_gpu)
    assert str(info.value) == (
        "hydra/launcher=ray_cluster asks each run for 1 GPU and 4 CPUs (hydra.launcher.ray.remote.num_gpus / num_cpus)"
        ", but the Ray it starts on this machine (address null) has 0 GPUs and 2 CPUs, so Ray would wait forever: add "
        "hydra.launcher.ray.remote.num_gpus=0 hydra.launcher.ray.remote.num_cpus=2, or send the sweep to a cluster "
        "with hydra.launcher.ray.init.address=host:port")
    fitted = [*sweep, "hydra.launcher.ray.remote.num_gpus=0", "hydra.launcher.ray.remote.num_cpus=2"]
    launcher_checks.check_launcher(fitted, resources=no_gpu)
    with pytest.raises(ConfigError, match="has 0 GPUs and 2 CPUs.*add hydra.launcher.ray.remote.num_cpus=2, or"):
        launcher_checks.check_launcher([*fitted[:-1], "hydra.launcher.ray.remote.num_cpus=3"], resources=no_gpu)
    launcher_checks.check_launcher([*sweep, "hydra.launcher.ray.init.num_gpus=1", "hydra.launcher.ray.init.num_cpus=4"],
                                   resources=no_gpu)  # ray.init declares the resources: trusted  # fmt: skip
    launcher_checks.check_launcher(sweep, resources=lambda: (8, 1))
    launcher_checks.check_launcher(sweep[1:], resources=no_gpu)  # a single run does not use the launcher


@pytest.mark.slow
def test_train_py_exits_2_with_one_line_and_an_empty_run_dir(tmp_path):
    run_dir = tmp_path / "run"
    result = subprocess.run([sys.executable, "train.py", *DEBUG, "replay_buffer_size=2000000000",
                             f"hydra.run.dir={run_dir}"], cwd=ROOT, capture_output=True, text=True,
                            timeout=120, env={**__import__("os").environ, "DRQ_MEMORY_LIMIT": "24G"})  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    line = one_line(result.stderr.strip().splitlines())
    assert line.startswith("drq: replay_buffer_size=2000000000: needs 13.8 TB of one allocation") and not result.stdout
    assert not run_dir.exists()
