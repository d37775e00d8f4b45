"""The GPU check's parts, kit or no kit: every command line bench/gpu/check.py (and learn.sh) will run is checked here
the way the real run sees it, and the rehearsal's CPU parts run on this suite's own venv.

The GPU check (``bash bench/gpu/check.sh``) is what the first GPU window runs, with no time to spare; its rehearsal
needs the offline kit, which CI does not build. So the fast tests build :func:`check.parts` for the GPU and for the
rehearsal and check each part's command: its script exists, its flags parse with that bench's own parser, and the run
config it composes (``bench/e2e.py``'s ``run_config``) passes ``drq.config.schema``'s checks -- without the machine
checks for the GPU list (no CUDA here), with every rule between keys. ``learn.sh --dry-run`` prints its three
commands, checked the same way. The slow test runs the rehearsal's parts through check.py's own runner.
"""

from __future__ import annotations

import csv
import functools
import importlib.util
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from drq.config import schema as config_schema
from drq.config.errors import check_overrides
from drq.run.sinks import EVAL_COLUMNS

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench" / "gpu"))

import check  # noqa: E402  (bench/gpu/check.py)
import compare_curve  # noqa: E402  (bench/gpu/compare_curve.py)

MODES = {"gpu": False, "rehearse": True}
PARTS = [(mode, name, argv) for mode, rehearse in MODES.items() for name, argv, _ in check.parts(rehearse)]


@functools.cache
def bench(script: str) -> ModuleType:
    """A bench script (``bench/e2e.py``) imported as a module, without running its main."""
    import replay  # noqa: F401  (the package, before bench/update.py puts bench/ -- and bench/replay.py -- first)

    saved = list(sys.path)
    try:
        spec = importlib.util.spec_from_file_location(f"bench_{Path(script).stem}", ROOT / script)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path[:] = saved
    return module


def parse(script: str, argv: list[str], capsys):
    """``argv`` parsed by the bench's own parser (``build_parser()``); a bad flag fails the test with argparse's line."""
    module = bench(script)
    assert hasattr(module, "build_parser"), f"{script} has no build_parser(): its flags cannot be checked"
    try:
        return module, module.build_parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"{script} {shlex.join(argv)}: {capsys.readouterr().err.strip()}")


def check_pytest_part(argv: list[str]) -> None:
    """``python -m pytest FILES -k 'not NAME' [-m MARK]``: the files exist, and the tests it deselects by name too
    (a renamed test would silently run again, or the filter would hide nothing)."""
    files = [a for a in argv if a.endswith(".py")]
    assert files, argv
    sources = ""
    for f in files:
        assert (ROOT / f).is_file(), f"{f}: no such test file"
        sources += (ROOT / f).read_text()
    k = argv[argv.index("-k") + 1] if "-k" in argv else ""
    for name in re.findall(r"not (\w+)", k):
        assert re.search(rf"def test_\w*{name}", sources), f"-k '{k}': no test named *{name}* in {files}"
    if "-m" in argv:
        marker = argv[argv.index("-m") + 1].split()[-1]
        assert marker in (ROOT / "pyproject.toml").read_text(), f"-m {marker}: not a marker in pyproject.toml"


@pytest.mark.parametrize("mode,name,argv", PARTS, ids=[f"{m}-{n}" for m, n, _ in PARTS])
def test_part_command_is_what_its_bench_accepts(mode, name, argv, capsys):
    if not argv:
        assert MODES[mode], f"{name}: the GPU check skips no part"
        return
    assert argv[0] == sys.executable, argv  # check.PY: the Python that runs check.py
    if argv[1] == "-c":
        compile(argv[2], f"<{name}>", "exec")
    elif argv[1:3] == ["-m", "pytest"]:
        check_pytest_part(argv[3:])
    else:
        script = argv[1]
        assert (ROOT / script).is_file(), f"{name}: {script} does not exist"
        module, args = parse(script, argv[2:], capsys)
        if hasattr(module, "run_config"):  # a bench that trains: the config it composes passes the schema
            cfg, rounded = module.run_config(args)
            lines = config_schema.check(cfg, machine=False)
            assert not lines, f"{name}: {shlex.join(argv[1:])} composes a config train.py rejects:\n" + "\n".join(lines)


def test_the_parts_cover_every_gpu_path():
    gpu = {name for mode, name, argv in PARTS if mode == "gpu"}
    rehearsed = {name for mode, name, argv in PARTS if mode == "rehearse" and argv}
    assert {"versions", "cuda_tests", "env_84", "env_256", "e2e_walker_walk"} <= rehearsed
    assert {f"update_{a}_{s}" for a in ("drqv2", "sac")
            for s in ("eager_fp32", "eager_bf16", "graphs_bf16", "compile_bf16", "both_bf16")} <= gpu
    assert {name for mode, name, _ in PARTS if mode == "rehearse"} == gpu  # same parts, smaller sizes


@pytest.mark.parametrize("argv", [["--agent", "sac", "--task", "cartpole_swingup", "--frames", "100"],
                                  ["--frames", "100", "preset=debug"],
                                  ["--agent", "sac", "--task", "cheetah_run", "--frames", "999",
                                   "--log-every-frames", "150"]],
                         ids=["sac-cartpole-repeat8", "debug-repeat8", "sac-cheetah-repeat4"])
def test_e2e_rounds_its_frame_counts_to_the_action_repeat(argv, capsys):
    module, args = parse("bench/e2e.py", argv, capsys)
    cfg, rounded = module.run_config(args)
    assert config_schema.check(cfg, machine=False) == []
    repeat = cfg["action_repeat"]
    assert repeat in (4, 8) and rounded["frames"][0] == args.frames and rounded["frames"][1] % repeat == 0
    assert 0 <= rounded["frames"][1] - args.frames < repeat  # the smallest multiple at or above what was asked
    assert cfg["num_train_frames"] == cfg["num_seed_frames"] + rounded["frames"][1] + cfg["log_every_frames"]


@pytest.mark.parametrize("script,argv,line", [
    ("bench/e2e.py", ["--frames", "100", "preset=debug", "num_seed_frames=401"],
     "bench/e2e.py: num_seed_frames=401: a multiple of action_repeat=8, e.g. 400 or 408"),
    ("bench/learn.py", ["task=walker_wlak"], "bench/learn.py: In 'config': Could not find 'task/walker_wlak'"),
])
def test_a_users_bad_value_is_one_line_and_exit_2_not_rounded(script, argv, line, monkeypatch, capsys):
    module = bench(script)
    monkeypatch.setattr(sys, "argv", [script, *argv])
    with pytest.raises(SystemExit) as exit_:
        module.main()
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1 and err[0].startswith(line), err


@pytest.mark.parametrize("argv", [["--agent", "drqv2"], ["--agent", "sac", "--task", "cheetah_run"],
                                  ["--agent", "sac", "preset=debug"], ["--agent", "drqv2", "preset=debug"]],
                         ids=["drqv2", "sac-cheetah", "sac-debug", "drqv2-debug"])
def test_learn_composes_a_valid_config(argv, capsys):
    module, args = parse("bench/learn.py", argv, capsys)
    overrides, cfg, rounded = module.train_overrides(args)
    assert config_schema.check(cfg, machine=False) == [] and rounded == {}  # its counts fit its repeats 2 and 8
    assert f"task={args.task}" in overrides and cfg["action_repeat"] == (8 if args.agent == "sac" else 2)


def test_learn_rounds_its_own_counts_but_not_the_users(capsys):
    module, args = parse("bench/learn.py", ["--agent", "sac", "action_repeat=6", "histogram_every_frames=600",
                                            "log_every_frames=1200"], capsys)
    overrides, cfg, rounded = module.train_overrides(args)
    assert rounded["eval_every_frames"] == [4000, 4002] and "log_every_frames" not in rounded
    assert cfg["log_every_frames"] == 1200 and config_schema.check(cfg, machine=False) == []


def learn_sh_dry_run(*overrides: str) -> dict:
    proc = subprocess.run(["bash", str(ROOT / "bench" / "gpu" / "learn.sh"), "--dry-run", *overrides],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_learn_sh_commands_exist_and_its_config_passes(tmp_path, capsys):
    cmds = learn_sh_dry_run()
    train, health, compare = cmds["train"], cmds["health"], cmds["compare_curve"]
    assert train[1] == "train.py" and (ROOT / "train.py").is_file()
    assert any(a.startswith("hydra.run.dir=") for a in train)
    check_overrides(train[2:], machine=False)  # names, values, rules; not the CUDA it will find on the GPU
    assert "device=cuda" in train and "cuda_graphs=true" in train
    assert health[1:3] == ["-m", "drq.analysis.health"] and importlib.util.find_spec(health[2]) is not None
    assert (ROOT / compare[1]).is_file()
    args = compare_curve.build_parser().parse_args(compare[2:])
    assert args.run == health[3] == train[-1].split("=", 1)[1]

    # compare_curve.py on a run dir shaped like the trainer's (drq.run.sinks' eval.csv columns) and a reference file
    # shaped like DrQ-v2's curves (an unnamed index column, agent, task, seed, frame, episode_reward, hour).
    run = tmp_path / "run"
    run.mkdir()
    with (run / "eval.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, EVAL_COLUMNS)
        w.writeheader()
        for frame, ret in ((0, 30.0), (10000, 120.0), (20000, 310.0)):
            w.writerow({**dict.fromkeys(EVAL_COLUMNS, 0), "frame": frame, "episode_reward": ret})
    (run / "metrics.jsonl").write_text("".join(json.dumps({"section": "health", "frame": f, "total_time": t}) + "\n"
                                               for f, t in ((4000, 10.0), (20000, 30.0))))
    ref = tmp_path / "ref.csv"
    ref.write_text(",agent,task,seed,frame,episode_reward,hour\n0,DrQ-v2,walker_walk,1,0,25.0,0\n"
                   "1,DrQ-v2,walker_walk,2,0,35.0,0\n2,DrQ-v2,walker_walk,1,20000,200.0,0.1\n")
    capsys.readouterr()
    compare_curve.main([str(run), "--reference", str(ref), "--wall-s", "60", "--train-rc", "130"])
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] and out["frames_per_s_after_seed"] == 800.0 and out["best_eval_return"] == 310.0
    assert [(r["frame"], r["ref_frame"], r["ref_mean"]) for r in out["vs_reference"]] == [
        (0, 0, 30.0), (10000, 0, 30.0), (20000, 20000, 200.0)]


def test_learn_sh_passes_overrides_to_train_py():
    train = learn_sh_dry_run("preset=debug", "seed=3")["train"]
    assert train[-2:] == ["preset=debug", "seed=3"]
    check_overrides(train[2:], machine=False)


def doc_commands() -> list[list[str]]:
    """The ``python bench/...`` and ``bash bench/gpu/learn.sh`` command lines in docs/gpu.md's code blocks."""
    text = (ROOT / "docs" / "gpu.md").read_text()
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            argv = shlex.split(line.split(" #")[0])
            while argv and re.fullmatch(r"[A-Z_]+=.*", argv[0]):  # PYTHONPATH=. MUJOCO_GL=egl python ...
                argv.pop(0)
            if len(argv) > 1 and argv[0].endswith(("python", "python3")) and argv[1].startswith("bench/"):
                out.append(argv[1:])
            elif argv[:2] in (["bash", "bench/gpu/learn.sh"], ["bash", "bench/gpu/check.sh"]):
                out.append(argv[1:])
    return out


def test_docs_gpu_commands_are_valid(capsys):
    commands = doc_commands()
    scripts = {c[0] for c in commands}
    assert {"bench/e2e.py", "bench/update.py", "bench/gpu/check.py", "bench/gpu/compare_curve.py",
            "bench/gpu/learn.sh", "bench/gpu/check.sh"} <= scripts, scripts  # the parser above still finds what the doc shows
    for script, *argv in commands:
        if script == "bench/gpu/learn.sh":
            learn_sh_dry_run(*argv)  # its flags parse (--minutes in range)
            continue
        if script == "bench/gpu/check.sh":  # its flags parse: it gets as far as looking for the kit
            proc = subprocess.run(["bash", script, *argv, "--kit", "/nonexistent"], capture_output=True, text=True,
                                  timeout=60, cwd=ROOT)
            assert proc.returncode == 2 and "no kit at /nonexistent" in proc.stderr, (argv, proc.stderr)
            continue
        module, args = parse(script, argv, capsys)
        if hasattr(module, "run_config"):
            cfg, _ = module.run_config(args)
            assert config_schema.check(cfg, machine=False) == [], shlex.join([script, *argv])


def collect_only(part: tuple[str, list[str], int]) -> tuple[str, list[str], int]:
    """``cuda_tests`` as ``pytest --collect-only``: its files run in this suite anyway (the CUDA-only tests skip
    here), so the rehearsal's run of them would only repeat seconds of CI; collecting proves that the files, the
    ``-k`` and ``-m`` selections and their imports are what the GPU run will find."""
    name, argv, limit = part
    return (name, argv + ["--collect-only"], limit) if name == "cuda_tests" else part


@pytest.mark.slow
def test_rehearsal_parts_run_on_this_venv(tmp_path):
    """Every rehearsal part but the offline install and the kit parity (check.sh's own steps), through check.py's
    runner, on this suite's Python: a part that fails here would fail on the GPU for the same reason."""
    part_list = [collect_only(p) for p in check.parts(rehearse=True)]
    failures = check.run_parts(part_list, tmp_path, budget=1200.0)
    lines = {x["part"]: x for x in map(json.loads, (tmp_path / "check.jsonl").read_text().splitlines())}
    assert failures == 0, {k: v.get("tail") for k, v in lines.items() if v.get("ok") is False}
    ran = {name for name, argv, _ in part_list if argv}
    assert {k for k, v in lines.items() if v.get("ok")} == ran
    assert all("budget" not in v.get("skipped", "") for v in lines.values())
    collected = lines["cuda_tests"]["result"]
    assert collected.get("deselected", 0) >= 1 and not collected["failed_tests"], collected
    e2e = lines["e2e_walker_walk"]["result"]
    assert e2e["action_repeat"] == 8 and e2e["rounded_to_action_repeat"]["frames"] == [100, 104]
    assert e2e["frames_per_s"] > 0 and e2e["breakdown_ms_per_step"]["env_wait"] >= 0
