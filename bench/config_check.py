"""How fast a bad configuration is rejected: in-process (the schema, and the trainer refusing it) and through train.py.

    python bench/config_check.py [--subprocess-repeats 1]

In-process: every bad value of tests/test_config_schema.py's table (at least one per schema key) is put into the
composed config and ``drq.run.trainer.run`` is called with it; each call must raise ConfigError before anything is built
(environments, workers, renderer, wandb and the run-dir lock are made to fail loudly if reached). The command line:
``drq.config.errors.check_overrides`` (hydra's parser and one composition per combination) on a few bad overrides,
and ``python train.py <override>`` as a subprocess (interpreter start, imports, composition, check, exit 2). Last line:
one JSON object with
  keys, bad_values              schema keys and bad values tried
  in_process_slowest_ms         slowest trainer.run(bad config) -> ConfigError, and in_process_median_ms
  check_overrides_slowest_s     slowest check_overrides(argv) over the command-line cases
  subprocess_s                  {override: wall seconds of python train.py override -> exit 2} (the best of repeats)
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CLI_CASES = ["eval_every_frames=-100", "discount=1.5", "eval_every_frames=1001", "task=walker_wlak",
             "agent=sac agent.init_temperature=0",
             # values that cannot be allocated, rendered or run here (drq/config/footprint.py, the render-size rule)
             "preset=debug task=cartpole_balance replay_buffer_size=2000000000",
             "preset=debug task=cartpole_balance image_size=100000",
             "preset=debug task=cartpole_balance batch_size=100000000 replay_buffer_size=200000000",
             "preset=debug task=cartpole_balance video_size=100000",
             "preset=debug task=cartpole_balance eval_workers=64 num_eval_episodes=64"]  # fmt: skip


def _bad_values_table():
    sys.path.insert(0, str(ROOT / "tests"))  # the table's module imports conftest's with_value
    spec = importlib.util.spec_from_file_location("test_config_schema", ROOT / "tests" / "test_config_schema.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--subprocess-repeats", type=int, default=1)
    args = p.parse_args()

    from drq.config import schema as config_schema
    from drq.envs import pixels as env
    from drq.envs import worker as env_worker
    from drq.envs import rendering
    from drq.run import lock as run_dir_lock
    from drq.run import sinks
    from drq.run import trainer
    from drq.config.errors import ConfigError, check_overrides

    table = _bad_values_table()  # before the stand-ins below: conftest sets up rendering when imported

    def started(*a, **k):
        raise AssertionError("something was built before the config was checked")

    env.make_env = env_worker.AsyncEnv.__init__ = env.PixelEnv.__init__ = started
    rendering.setup_rendering = sinks.WandbSink.__init__ = run_dir_lock.acquire = started

    composed = {agent: table.compose(f"agent={agent}") for agent in ("drqv2", "sac")}
    times = []
    with tempfile.TemporaryDirectory(prefix="drq_config_check_") as tmp:
        for key, value, _ in table.CASES:
            cfg = table.with_value(composed["sac" if key in table.SAC_ONLY else "drqv2"], key, value)
            start = time.perf_counter()
            try:
                trainer.run(cfg, Path(tmp) / "run", say=lambda s: None)
            except ConfigError:
                times.append(time.perf_counter() - start)
            else:
                raise SystemExit(f"{key}={value!r} was accepted")
    cli = []
    for case in CLI_CASES:
        start = time.perf_counter()
        try:
            check_overrides(case.split())
        except ConfigError:
            cli.append(time.perf_counter() - start)
    sub: dict[str, float] = {}
    for case in CLI_CASES[:3]:
        for _ in range(args.subprocess_repeats):
            with tempfile.TemporaryDirectory(prefix="drq_config_check_") as tmp:
                start = time.perf_counter()
                result = subprocess.run([sys.executable, "train.py", *case.split(), f"hydra.run.dir={tmp}/run"],
                                        cwd=ROOT, capture_output=True, text=True, timeout=300)  # fmt: skip
                wall = time.perf_counter() - start
                assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
                assert not (Path(tmp) / "run").exists()
            sub[case] = round(min(sub.get(case, wall), wall), 2)
    print(json.dumps({"keys": len(config_schema.keys()), "bad_values": len(table.CASES),
                      "in_process_slowest_ms": round(max(times) * 1e3, 2),
                      "in_process_median_ms": round(statistics.median(times) * 1e3, 2),
                      "check_overrides_slowest_s": round(max(cli), 3), "subprocess_s": sub}))  # fmt: skip


if __name__ == "__main__":
    main()
