"""Run every GPU path once, each part under its own timeout, one JSON line per part (bench/gpu/check.sh calls this).

    python bench/gpu/check.py --out DIR [--rehearse] [--budget-s 285]

Parts, in order of importance (a part starts only if the whole check's budget still has room for its timeout, so a
hang or a slow part cannot eat the window; what did not run says why):

  versions          torch / CUDA / driver / GPU name, Python, and the kit's package versions
  cuda_tests        pytest: tests/test_cuda_graph_vs_eager.py, tests/test_cuda_paths.py, tests/test_fast_paths.py
  update_<agent>_<setting>   bench/update.py at batch 256 for drqv2 and sac: eager_fp32, eager_bf16, graphs_bf16
                    (CUDA graphs), compile_bf16 (torch.compile), both_bf16 (compile + graphs); updates/s and the ratio
                    to the plain eager fp32 baseline measured in the same run
  env_84, env_256   bench/env.py with MUJOCO_GL=egl: renders/s at 84x84 and 256x256
  e2e_walker_walk   bench/e2e.py --task walker_walk: frames/s and where the loop's time goes (env wait, update,
                    sample, act)

Writes DIR/check.jsonl (one line per part: part, ok, rc, seconds, result = the part's own JSON line or pytest's
counts, cmd) and DIR/check.log (every part's output). ``--rehearse``: the same parts on the CPU with tiny sizes (the
kit's proof, bench/gpu/check.sh --rehearse); the CUDA-graph and torch.compile benches are skipped there (no capture
without CUDA; inductor's CPU compile takes minutes on a busy 2-core machine), and the graph-vs-eager comparison runs on
its CPU stand-in. ``cuda_tests`` leaves out tests/test_fast_paths.py's CPU compile test in both modes (the normal
suite runs it; on the GPU the compile benches compile for CUDA).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable

VERSIONS = r"""
import json, platform, subprocess, importlib.metadata as md
import torch
out = {"python": platform.python_version(), "torch": torch.__version__, "cuda_runtime": torch.version.cuda,
       "cuda_available": torch.cuda.is_available()}
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    out.update(gpu=torch.cuda.get_device_name(0), capability=".".join(map(str, torch.cuda.get_device_capability(0))),
               gpu_mem_gib=round(p.total_memory / 2**30, 1), cudnn=torch.backends.cudnn.version())
    try:
        q = subprocess.run(["nvidia-smi", "--query-gpu=driver_version,name", "--format=csv,noheader"],
                           capture_output=True, text=True, timeout=20)
        out["driver"] = q.stdout.strip()
    except Exception as e:  # noqa: BLE001
        out["driver"] = f"nvidia-smi failed: {e}"
for d in ("mujoco", "dm_control", "dm-env", "dm-tree", "hydra-core", "omegaconf", "antlr4-python3-runtime", "PyOpenGL",
          "numpy", "opencv-python-headless", "matplotlib", "scipy", "triton", "wandb"):
    try:
        out[d] = md.version(d)
    except md.PackageNotFoundError:
        out[d] = None
import drq, drq.run.trainer, drq.envs.pixels, replay  # the package imports, with what the kit holds
import mujoco
out["mujoco_file"] = mujoco.__file__
print(json.dumps(out))
"""


def parts(rehearse: bool) -> list[tuple[str, list[str], int]]:
    """``(name, argv, timeout_s)`` in the order they run."""
    tests = ["tests/test_cuda_graph_vs_eager.py", "tests/test_cuda_paths.py", "tests/test_fast_paths.py"]
    out = [("versions", [PY, "-c", VERSIONS], 60),
           # not the CPU torch.compile test (inductor's C++ build: minutes on a busy CPU; the normal suite runs it, and
           # the compile benches below compile on CUDA); the rehearsal also leaves out the slow bf16-on-CPU variants
           ("cuda_tests", [PY, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", *tests,
                           "-k", "not compiled_networks"] + (["-m", "not slow"] if rehearse else []),
            300 if rehearse else 150)]
    upd = [PY, "bench/update.py"]
    if rehearse:
        upd += ["--device", "cpu", "--batch-size", "8", "--iters", "2", "--warmup", "1", "--rounds", "1"]
    else:
        upd += ["--device", "cuda", "--batch-size", "256", "--iters", "200", "--warmup", "5", "--rounds", "5"]
    settings = {"eager_fp32": ["--precision", "fp32", "--cuda-graphs", "off", "--compile", "none"],
                "eager_bf16": ["--precision", "bf16", "--cuda-graphs", "off", "--compile", "none"],
                "graphs_bf16": ["--precision", "bf16", "--cuda-graphs", "on", "--compile", "none"],
                "compile_bf16": ["--precision", "bf16", "--cuda-graphs", "off", "--compile", "default"],
                "both_bf16": ["--precision", "bf16", "--cuda-graphs", "on", "--compile", "default"]}
    late = []
    for setting, flags in settings.items():
        for agent in ("drqv2", "sac"):
            name = f"update_{agent}_{setting}"
            if rehearse and ("on" in flags or "default" in flags):  # CUDA graphs or torch.compile
                late.append((name, [], 0))  # skipped: see the docstring
                continue
            if rehearse and name == "update_sac_eager_bf16":  # bf16 is emulated on this CPU (~12x slower than fp32)
                late.append((name, [], 1))
                continue
            # the rehearsal measures the FLOP/s peak once (bench/peak.py: ~5 s of CPU a run); its timeouts allow
            # a busy 2-core machine (other jobs running) 2-3x the GPU's
            peak = ["--no-peak"] if rehearse and name != "update_drqv2_eager_fp32" else []
            entry = (name, upd + ["--agent", agent] + flags + peak,
                     150 if "compile" in setting else 180 if rehearse else 60)
            (late if "compile" in setting else out).append(entry)
    if rehearse:
        env = [PY, "bench/env.py", "--task", "walker_walk", "--overlap-steps", "0"]
        out += [("env_84", env + ["--size", "84", "--agent-steps", "5"], 90),
                ("e2e_walker_walk", [PY, "bench/e2e.py", "--task", "walker_walk", "--device", "cpu", "--frames", "100",
                                     "--log-every-frames", "50", "preset=debug", "batch_size=16"], 300),
                ("env_256", env + ["--size", "256", "--agent-steps", "2"], 90)]
    else:
        env = [PY, "bench/env.py", "--task", "walker_walk", "--overlap-steps", "40"]
        out += [("env_84", env + ["--size", "84", "--agent-steps", "300"], 60),
                ("e2e_walker_walk", [PY, "bench/e2e.py", "--task", "walker_walk", "--device", "cuda",
                                     "--frames", "6000", "--log-every-frames", "1000"], 100),
                ("env_256", env + ["--size", "256", "--agent-steps", "100", "--overlap-steps", "0"], 45)]
    return out + late


def last_json(text: str) -> dict | None:
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                return None
    return None


def pytest_counts(text: str) -> dict:
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", text)}
    failed = [m for m in re.findall(r"^FAILED (\S+)", text, flags=re.M)]
    return {**counts, "failed_tests": failed}


def part_env() -> dict[str, str]:
    """The environment every part runs in: this tree importable (``drq``, ``replay``), EGL rendering, wandb off (the
    kit carries no wandb; check.sh exports the same)."""
    env = dict(os.environ)
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if str(ROOT) not in paths:
        paths.append(str(ROOT))
    env.update(PYTHONPATH=os.pathsep.join(paths), WANDB_MODE="disabled", MUJOCO_GL=env.get("MUJOCO_GL", "egl"))
    return env


def run_parts(part_list: list[tuple[str, list[str], int]], out_dir: Path, budget: float,
              only: str | None = None) -> int:
    """Run ``part_list`` (:func:`parts`) in order, each under ``timeout`` within the whole ``budget`` (seconds);
    append one JSON line per part to ``out_dir/check.jsonl`` (and print it), every part's output to
    ``out_dir/check.log``. Returns the number of parts that failed."""
    out_dir.mkdir(parents=True, exist_ok=True)
    jsonl, log = out_dir / "check.jsonl", out_dir / "check.log"
    env = part_env()
    start = time.perf_counter()
    failures = 0
    for name, argv, limit in part_list:
        if only and not re.search(only, name):
            continue
        line: dict = {"part": name}
        left = budget - (time.perf_counter() - start)
        if not argv and limit == 1:
            line.update(ok=None, skipped="rehearsal: drqv2's bf16 run proves the path; bf16 is emulated on this CPU")
        elif not argv:
            line.update(ok=None, skipped="CUDA graphs and torch.compile benches run on the GPU only (no capture "
                                         "without CUDA; inductor's CPU compile takes minutes here)")
        elif left < min(limit, 30):
            line.update(ok=None, skipped=f"budget: {left:.0f} s left of {budget:.0f} s")
        else:
            limit = int(min(limit, left))
            t0 = time.perf_counter()
            with log.open("a") as f:
                f.write(f"\n===== {name} (timeout {limit} s): {' '.join(argv[1:])[:400]}\n")
                f.flush()
                proc = subprocess.run(["timeout", "-k", "10", str(limit), *argv], cwd=ROOT, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True, errors="replace", env=env)
                f.write(proc.stdout)
            seconds = time.perf_counter() - t0
            result = pytest_counts(proc.stdout) if name == "cuda_tests" else last_json(proc.stdout)
            ok = proc.returncode == 0 and result is not None
            line.update(ok=ok, rc=proc.returncode, seconds=round(seconds, 1), result=result,
                        **({"timed_out": True} if proc.returncode in (124, 137) else {}),
                        **({"tail": proc.stdout.strip().splitlines()[-3:]} if not ok else {}),
                        cmd="python -c VERSIONS" if name == "versions" else " ".join(argv[1:])[:300])
            failures += not ok
        with jsonl.open("a") as f:
            f.write(json.dumps(line) + "\n")
        print(json.dumps(line), flush=True)
    return failures


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--rehearse", action="store_true")
    ap.add_argument("--budget-s", type=float, default=None, help="whole check's wall budget (285 s; rehearsal 1200)")
    ap.add_argument("--only", default=None, help="run only the parts whose name matches this regex (a second call: "
                                                 "--only 'compile|both')")
    return ap


def main() -> None:
    args = build_parser().parse_args()
    budget = args.budget_s if args.budget_s is not None else (1200.0 if args.rehearse else 285.0)
    out_dir = Path(args.out)
    start = time.perf_counter()
    failures = run_parts(parts(args.rehearse), out_dir, budget, args.only)
    summary = {"part": "summary", "rehearse": args.rehearse, "failures": failures,
               "wall_s": round(time.perf_counter() - start, 1), "budget_s": budget}
    with (out_dir / "check.jsonl").open("a") as f:
        f.write(json.dumps(summary) + "\n")
    print(json.dumps(summary), flush=True)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
