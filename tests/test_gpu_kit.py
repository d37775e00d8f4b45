"""The GPU kit's tools: wheel slimming, the tag/parity check, the scripts' bad-input lines, and (slow) the rehearsal.

The rehearsal (``bash bench/gpu/check.sh --rehearse``) builds a device-like venv from the registry and needs the
3.11 kit (``bash bench/gpu/build_kit.sh 3.11``): it is skipped, with that reason, where the kit was not built. CI
checks the parts without the kit in tests/test_gpu_check.py (every part's command; the rehearsal's parts, run).
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench" / "gpu"))

import kit_parity  # noqa: E402
import slim_wheel  # noqa: E402


def _wheel(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
        z.writestr("pkg-1.0.dist-info/RECORD", "stale,,\n")
    return path


def test_slim_wheel_drops_matching_files_and_rewrites_record(tmp_path):
    files = {"pkg/__init__.py": b"x = 1\n", "pkg/assets/big.bin": b"\0" * 5000, "pkg/a_test.py": b"t\n",
             "pkg-1.0.dist-info/METADATA": b"Name: pkg\n"}
    src = _wheel(tmp_path / "pkg-1.0-py3-none-any.whl", files)
    info = slim_wheel.slim(str(src), str(tmp_path / "out.whl"), ["pkg/assets/*", "pkg/*_test.py"])
    assert info["dropped_files"] == 2 and info["files_after"] == 3
    with zipfile.ZipFile(tmp_path / "out.whl") as z:
        names = set(z.namelist())
        record = z.read("pkg-1.0.dist-info/RECORD").decode().splitlines()
    assert names == {"pkg/__init__.py", "pkg-1.0.dist-info/METADATA", "pkg-1.0.dist-info/RECORD"}
    digest = base64.urlsafe_b64encode(hashlib.sha256(b"x = 1\n").digest()).rstrip(b"=").decode()
    assert f"pkg/__init__.py,sha256={digest},6" in record and "pkg-1.0.dist-info/RECORD,," in record
    assert not any("assets" in line or "stale" in line for line in record)


@pytest.mark.parametrize("filename,ok", [
    ("dm_control-1.0.50-py3-none-any.whl", True),
    ("glfw-2.11.0-py2.py3-none-manylinux2014_x86_64.whl", True),
    ("mujoco-3.17.0-cp312-cp312-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl", True),
    ("x-1.0-cp39-abi3-manylinux_2_17_x86_64.whl", True),
    ("mujoco-3.17.0-cp311-cp311-manylinux_2_27_x86_64.whl", False),  # another Python
    ("dm_tree-0.1.10-cp312-cp312-macosx_11_0_arm64.whl", False),  # another platform
    ("x-1.0-cp312-cp312-manylinux_2_17_aarch64.whl", False),
])
def test_kit_parity_tags(filename, ok):
    assert kit_parity.tags_ok(filename, "cp312") is ok


@pytest.mark.parametrize("script,args,line", [
    ("check.sh", ["--fast"], "check.sh: unknown argument '--fast'; valid: --rehearse, --out DIR, --kit DIR, --only REGEX"),
    ("check.sh", ["--kit", "/nonexistent"], "check.sh: no kit at /nonexistent; build it first where pip works"),
    ("learn.sh", ["--minutes", "7"], "learn.sh: --minutes must be a number in (0, 6], got '7'"),
    ("build_kit.sh", ["3"], "build_kit.sh: python version must look like 3.12 or 3.11, got '3'"),
])
def test_scripts_reject_bad_input_in_one_line(script, args, line, tmp_path):
    proc = subprocess.run(["bash", str(ROOT / "bench" / "gpu" / script), *args], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path, env={"PATH": "/usr/bin:/bin", "OUT": str(tmp_path)})
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(line), proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
@pytest.mark.skipif(not (ROOT / ".devkit" / "py3.11" / "wheels").is_dir(),
                    reason="the 3.11 kit is not built (bash bench/gpu/build_kit.sh 3.11); CI does not build it")
@pytest.mark.skipif(not (ROOT / ".devkit" / "py3.12" / "wheels").is_dir(),
                    reason="the 3.12 kit is not built (bash bench/gpu/build_kit.sh 3.12); CI does not build it")
def test_rehearsal_runs_every_part_offline(tmp_path):
    proc = subprocess.run(["bash", "bench/gpu/check.sh", "--rehearse", "--out", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=2400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = [json.loads(x) for x in (tmp_path / "check.jsonl").read_text().splitlines()]
    parts = {x["part"]: x for x in lines}
    assert {"kit", "versions", "cuda_tests", "env_84", "env_256", "e2e_walker_walk", "kit_parity",
            "summary"} <= parts.keys()
    assert parts["summary"]["failures"] == 0 and parts["kit_parity"]["ok"]
    assert all(x.get("ok") or x.get("skipped") for x in lines if x["part"] not in ("summary",)), lines
    assert "mujoco-3.17.0" in parts["kit"]["installed_offline"]
    assert parts["versions"]["result"]["wandb"] is None  # the kit runs without wandb: proven here
    assert parts["cuda_tests"]["result"].get("failed", 0) == 0 and parts["cuda_tests"]["result"]["passed"] > 0
    assert parts["e2e_walker_walk"]["result"]["breakdown_ms_per_step"]["env_wait"] >= 0
