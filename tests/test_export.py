"""``python -m drq.export``: the exported graphs (TorchScript, ONNX in ONNX Runtime) against the in-process policy on
the debug run's recorded episodes, their metadata, and the ONNX file run with the sidecar's recipe in an interpreter
that never imports drq or torch. The ONNX tests need the ``export`` extra (CI installs it) and skip without it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import drq
from conftest import run_module_as_main
from drq import export
from drq.run import snapshot as snapshots
from tests.test_policy import record_episodes

PARITY = 1e-5  # fp32: the largest |difference| allowed between a graph's actions and the policy's


@pytest.fixture(scope="module")
def recorded(debug_run):
    """The debug run's policy, its recorded episodes (>= 100 observations, the pictures the env rendered) and the
    snapshot's provenance."""
    episodes = record_episodes(debug_run.run_dir)
    assert len(episodes.observations) >= 100
    return drq.load_policy(debug_run.run_dir), episodes


@pytest.fixture(scope="module")
def onnx_file(debug_run, tmp_path_factory):
    pytest.importorskip("onnxruntime")
    out = tmp_path_factory.mktemp("export") / "policy.onnx"  # not in the shared run dir: its readers only read
    return export.export(debug_run.run_dir, "onnx", out)


def test_the_onnx_graph_acts_as_the_policy_in_onnx_runtime(recorded, onnx_file):
    import onnx
    import onnxruntime

    policy, episodes = recorded
    session = onnxruntime.InferenceSession(onnx_file["file"], providers=["CPUExecutionProvider"])
    assert [(i.name, i.type, i.shape[1:]) for i in session.get_inputs()] == [
        ("observation", "tensor(uint8)", list(policy.observation_shape))]
    expected = policy.act_on_observation(episodes.observations)
    batch = session.run(["action"], {"observation": episodes.observations})[0]  # all at once: the batch is free
    one_by_one = np.concatenate([session.run(["action"], {"observation": o[None]})[0] for o in episodes.observations])
    assert batch.dtype == np.float32 and batch.shape == expected.shape
    assert np.abs(batch - expected).max() <= PARITY and np.abs(one_by_one - expected).max() <= PARITY
    assert np.abs(one_by_one - episodes.actions).max() <= PARITY  # and as the agent acted in its episodes
    assert onnx_file["parity_max_abs_diff"] <= PARITY  # the export's own check on random observations
    model = onnx.load(onnx_file["file"])
    embedded = json.loads({p.key: p.value for p in model.metadata_props}["drq"])
    assert embedded == json.loads(Path(onnx_file["metadata"]).read_text())


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")  # PyTorch 2.13's note
def test_the_torchscript_graph_acts_as_the_policy(recorded, debug_run, tmp_path):
    policy, episodes = recorded
    result = export.export(debug_run.run_dir, "torchscript", tmp_path / "policy.pt")
    extra = {"drq.json": ""}
    module = torch.jit.load(result["file"], _extra_files=extra)
    with torch.no_grad():
        batch = module(torch.from_numpy(episodes.observations)).numpy()
        one_by_one = np.concatenate([module(torch.from_numpy(o[None])).numpy() for o in episodes.observations])
    expected = policy.act_on_observation(episodes.observations)
    assert np.abs(batch - expected).max() <= PARITY and np.abs(one_by_one - expected).max() <= PARITY
    assert np.abs(one_by_one - episodes.actions).max() <= PARITY
    assert json.loads(extra["drq.json"]) == json.loads(Path(result["metadata"]).read_text())


def test_the_sidecar_says_what_a_robot_loop_needs(recorded, onnx_file, debug_run):
    policy, _ = recorded
    meta = json.loads(Path(onnx_file["metadata"]).read_text())
    session = snapshots.load(debug_run.run_dir)["provenance"][-1]
    cfg = debug_run.cfg
    assert meta["format"] == "onnx" and meta["file"] == "policy.onnx" and Path(onnx_file["metadata"]).name == \
        "policy.onnx.json"  # fmt: skip
    assert {k: meta[k] for k in ("task", "frame_stack", "image_size", "channel_order", "frame_order", "action_repeat",
                                 "action_low", "action_high", "input", "output", "input_dtype")} == {
        "task": "cartpole_swingup", "frame_stack": cfg["frame_stack"], "image_size": cfg["image_size"],
        "channel_order": "RGB", "frame_order": "oldest first", "action_repeat": cfg["action_repeat"],
        "action_low": [-1.0], "action_high": [1.0], "input": "observation", "output": "action", "input_dtype": "uint8"}
    assert meta["input_shape"] == ["B", *policy.observation_shape] and meta["output_shape"] == ["B", 1]
    assert meta["commit"] == session["code"]["commit"] and meta["commit"] and meta["drq_version"] == drq.__version__
    assert meta["snapshot_frame"] == policy.frame > 0 and meta["agent"] == "drqv2" and "INTER_AREA" in meta["resize"]


ROBOT_LOOP = """
import json, sys
import cv2, numpy as np, onnxruntime
meta = json.load(open(sys.argv[1]))
session = onnxruntime.InferenceSession(sys.argv[2], providers=["CPUExecutionProvider"])
size, k = meta["image_size"], meta["frame_stack"]
frames, actions = [], []
for picture in [p for path in sys.argv[3:] for p in np.load(path)]:  # uint8 (H, W, 3) RGB, as a camera gives it
    if picture.shape[:2] != (size, size):
        picture = cv2.resize(picture, (size, size), interpolation=cv2.INTER_AREA)
    frame = picture.transpose(2, 0, 1)                   # channels first
    frames = [frame] * k if not frames else frames[1:] + [frame]   # the first picture fills the stack
    observation = np.concatenate(frames)[None]           # (1, 3k, S, S), oldest frame first
    actions.append(session.run([meta["output"]], {meta["input"]: observation})[0][0])
print(json.dumps({"actions": np.stack(actions).tolist(),
                  "imported": [m for m in ("drq", "torch") if m in sys.modules]}))
"""


def test_onnx_runtime_runs_the_file_without_drq(recorded, onnx_file, tmp_path):
    """A fresh interpreter without drq or torch (the point of the subprocess) follows the sidecar: resize, stack,
    run. On the pictures the env rendered its actions are the agent's; on larger, non-square ones (resized) the
    policy's."""
    import cv2

    policy, episodes = recorded
    pictures = np.stack(episodes.pictures[1][:30])
    larger = np.stack([cv2.resize(p, (90, 70), interpolation=cv2.INTER_LINEAR) for p in pictures])
    np.save(tmp_path / "native.npy", pictures), np.save(tmp_path / "larger.npy", larger)
    done = subprocess.run([sys.executable, "-c", ROBOT_LOOP, onnx_file["metadata"], onnx_file["file"],
                           str(tmp_path / "native.npy"), str(tmp_path / "larger.npy")], capture_output=True, text=True,
                          timeout=120,
                          env={"PATH": "/usr/bin:/bin"}, cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["imported"] == []
    actions = np.array(result["actions"], np.float32)
    first = len(episodes.pictures[0])  # the recorded actions of the second episode start after the first's
    assert np.abs(actions[:30] - episodes.actions[first:first + 30]).max() <= PARITY
    policy.reset()  # the loop's stack runs on from the native pictures into the larger ones, as here
    expected = np.stack([policy.act(p) for p in [*pictures, *larger]])
    assert np.abs(actions - expected).max() <= PARITY


def test_the_command_line(debug_run, tmp_path, monkeypatch):
    code, out, err = run_module_as_main("drq.export", str(debug_run.run_dir), "--format", "torchscript", "--out",
                                        str(tmp_path / "robot.pt"))  # fmt: skip
    assert code == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["file"] == str(tmp_path / "robot.pt") and result["metadata"] == str(tmp_path / "robot.pt.json")
    assert result["parity_max_abs_diff"] <= PARITY and sorted(p.name for p in tmp_path.iterdir()) == [
        "robot.pt", "robot.pt.json"]  # no temporary file left
    code, out, err = run_module_as_main("drq.export", str(tmp_path), "--format", "onnx")  # no snapshot there
    assert code == 1 and err.strip() == f"drq.export: no snapshot at {tmp_path / 'snapshot.pt'}"
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # the export extra missing
    code, out, err = run_module_as_main("drq.export", str(debug_run.run_dir), "--format", "onnx")
    assert code == 1 and err.count("\n") == 1 and "pip install 'drq[export]'" in err
    code, out, err = run_module_as_main("drq.export", str(debug_run.run_dir), "--format", "tflite")
    assert code == 2 and "invalid choice: 'tflite'" in err
