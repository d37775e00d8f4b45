"""The memory a run really takes, beside what the pre-run check estimates (drq/config/footprint.py).

    python bench/footprint.py learner [--configs drqv2:84:256 drqv2:84:512 sac:84:256]
    python bench/footprint.py train -- task=walker_walk num_train_frames=1000 num_seed_frames=960 ...

``learner``: for each ``agent:image_size:batch_size`` (hidden 1024, feature 50, frame stack 3), a fresh process imports
torch and drq.agents, builds the agent and a small FrameReplay, runs 3 updates and reports its peak RSS (VmHWM) and the
parts: imports, agent, the updates. The estimate printed beside it is run_footprint's networks + batch (without its
process allowance). ``train``: runs ``python train.py <overrides>`` and reads the RSS of it and of every child process
every 0.3 s; it prints each process's peak and run_footprint's estimate of the same config by part. Last line: one JSON
object (``"machine"``: drq.speed.hardware.describe()).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

_LEARNER = r"""
import json, sys
def rss():
    fields = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
    return {k: int(fields[k].split()[0]) * 1024 for k in ("VmRSS", "VmHWM")}
agent_name, size, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
import numpy as np, torch
torch.set_num_threads(2)
from drq.agents import make_agent
from replay import FrameReplay
imported = rss()["VmRSS"]
kwargs = ({"num_expl_steps": 0, "stddev_schedule": "0.2", "stddev_clip": 0.3} if agent_name == "drqv2" else
          {"init_temperature": 0.1, "log_std_bounds": [-10, 2], "actor_update_every_steps": 1,
           "critic_target_update_every_steps": 1, "num_target_augs": 2, "num_critic_augs": 2, "target_encoder": True})
agent = make_agent(agent_name, obs_shape=(9, size, size), action_shape=(6,), device="cpu", precision="fp32",
                   feature_dim=50, hidden_dim=1024, lr=1e-4, critic_target_tau=0.01, update_every_steps=1,
                   channels_last=True, **kwargs)
built = rss()["VmRSS"]
replay = FrameReplay(max(2 * batch, 200), (3, size, size), (6,), frame_stack=3, nstep=3)
rng = np.random.default_rng(0)
for i in range(replay.capacity + 5):
    replay.add(rng.integers(0, 255, (3, size, size), dtype=np.uint8), rng.uniform(-1, 1, 6).astype(np.float32),
               0.5, 1.0, i % 100 == 0, i % 100 == 99)
filled = rss()["VmRSS"]
for step in range(3):
    agent.update(replay.sample(batch), step)
print(json.dumps({"imports": imported, "agent": built - imported, "replay": replay.nbytes,
                  "updates": rss()["VmHWM"] - filled, "peak": rss()["VmHWM"]}))
"""


def learner(configs: list[str]) -> dict:
    from drq.config import footprint as run_footprint

    rows = []
    for config in configs:
        agent, size, batch = config.split(":")
        out = subprocess.run([sys.executable, "-c", _LEARNER, agent, size, batch], cwd=ROOT, capture_output=True,
                             text=True, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)}).stdout  # fmt: skip
        measured = json.loads(out.strip().splitlines()[-1])
        v = {"agent.name": agent, "image_size": int(size), "batch_size": int(batch), "frame_stack": 3,
             "feature_dim": 50, "hidden_dim": 1024, "agent.num_critic_augs": 2, "agent.num_target_augs": 2}
        trained, target = run_footprint.network_params(v)
        estimate = {"networks": 16 * trained + 4 * target, "batch": run_footprint.batch_bytes(v)}
        row = {"config": config, "measured": measured, "estimated": estimate,
               "estimated_over_measured": round((estimate["networks"] + estimate["batch"])
                                                / (measured["agent"] + measured["updates"]), 2)}  # fmt: skip
        print(json.dumps(row), flush=True)
        rows.append(row)
    return {"learner": rows}


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry))
    return out


def _tree(pid: int) -> list[int]:
    return [pid] + [p for child in _children(pid) for p in _tree(child)]


def _rss(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def train(overrides: list[str]) -> dict:
    from drq.config import footprint as run_footprint
    from drq.config import schema
    from drq.config.errors import CONFIG_DIR

    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = OmegaConf.to_container(compose("config", overrides=[o for o in overrides if not o.startswith("hydra")]),
                                     resolve=True)  # fmt: skip
    fp = run_footprint.footprint(schema._check(cfg, machine=False)[1], run_footprint.Machine.here())
    proc = subprocess.Popen([sys.executable, "train.py", *overrides], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    peaks: dict[int, int] = {}
    names: dict[int, str] = {}
    total_peak = 0
    while proc.poll() is None:
        total = 0
        for pid in _tree(proc.pid):
            rss = _rss(pid)
            if rss is None:
                continue
            total += rss
            if pid not in names:
                try:
                    names[pid] = Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")[:80]
                except OSError:
                    names[pid] = "?"
            peaks[pid] = max(peaks.get(pid, 0), rss)
        total_peak = max(total_peak, total)
        time.sleep(0.3)
    processes = [{"pid": pid, "peak_rss": peak, "cmd": names[pid]} for pid, peak in sorted(peaks.items())]
    for row in processes:
        print(json.dumps(row), flush=True)
    return {"returncode": proc.returncode, "sum_of_rss_peak": total_peak, "processes": processes,
            "estimated": {"ram": fp.ram("ram"), "replay_written": fp.replay_frames + fp.replay_meta,
                          "process": fp.process, "networks": fp.networks, "batch": fp.batch, "envs": fp.envs,
                          "video": fp.video}}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=("learner", "train"))
    p.add_argument("--configs", nargs="+", default=["drqv2:84:128", "drqv2:84:256", "drqv2:84:512", "sac:84:256"])
    p.add_argument("overrides", nargs="*", help="train: train.py overrides (after --)")
    args = p.parse_args()
    result = learner(args.configs) if args.mode == "learner" else train(args.overrides)
    from drq.speed.hardware import describe

    result["machine"] = describe("cpu")
    result["load"] = os.getloadavg()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
