"""Export a trained agent's policy as one graph a robot loop runs without drq: uint8 observations in, actions out.

    python -m drq.export RUN_DIR_OR_SNAPSHOT --format onnx|torchscript [--out PATH]

The graph is :class:`drq.policy.PolicyNetwork`: input ``observation`` uint8 ``(B, 3k, S, S)`` (k RGB frames, oldest
first, channels first; any batch size B), output ``action`` float32 ``(B, A)``, the mean action ``tanh(mu)`` mapped
onto the environment's bounds. ONNX (opset 20, ``torch.onnx.export(dynamo=True)``; needs the ``export`` extra:
``pip install 'drq[export]'``) runs in ONNX Runtime; TorchScript (``torch.jit.trace``, frozen) in ``torch.jit.load``
or libtorch (PyTorch deprecates TorchScript: prefer ONNX).

Beside the file, ``PATH.json`` (also inside the file: ONNX metadata ``drq``, TorchScript extra file ``drq.json``) holds
what the loop needs: the task, frame stack, image size, channel and frame order, how to resize a picture, the action
repeat and bounds, the snapshot's frame, the drq version and the run's commit (:func:`metadata`). The default PATH is
``RUN_DIR/policy.onnx`` or ``RUN_DIR/policy.pt``. After writing, the file is loaded back and run on 64 random
observations against the in-process policy; the largest difference is printed with the paths, and a JSON object is
the last line of stdout: ``{"file", "metadata", "format", "parity_max_abs_diff", "observations"}``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Iterator

if __name__ == "__main__":  # the entry point, before torch loads (a call of main() from python changes nothing)
    from drq.machine.process_tuning import tune_process

    tune_process()

import numpy as np  # noqa: E402
import torch  # noqa: E402

import drq  # noqa: E402
from drq.policy import Policy, load_policy  # noqa: E402
from drq.run import snapshot as snapshots  # noqa: E402

FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}
INPUT, OUTPUT = "observation", "action"
ONNX_OPSET = 20
EXTRA = "the export extra: pip install 'drq[export]' (onnx, onnxruntime, onnxscript)"


def metadata(policy: Policy, fmt: str, file: Path) -> dict[str, Any]:
    """What a robot loop needs beside the graph (the JSON sidecar): the snapshot's env record, the graph's input and
    output, how pictures become observations, the agent, the snapshot's frame, the drq version and the run's commit."""
    last = policy.provenance[-1] if policy.provenance else {}
    code, versions = last.get("code") or {}, last.get("versions") or {}
    size = policy.image_size
    return {
        "format": fmt, "file": file.name, "input": INPUT, "input_dtype": "uint8",
        "input_shape": ["B", *policy.observation_shape], "output": OUTPUT, "output_dtype": "float32",
        "output_shape": ["B", *policy.action_shape], **policy.env,
        "resize": f"cv2.resize(picture, ({size}, {size}), interpolation=cv2.INTER_AREA) when a picture is not "
                  f"{size}x{size} (stretched, never cropped), then channels first",
        "reset": "at an episode's start the first frame fills all frame_stack slots",
        "agent": policy.agent, "snapshot_frame": policy.frame, "drq_version": drq.__version__,
        "trained_with_drq": versions.get("drq"), "commit": code.get("commit"), "commit_dirty": code.get("dirty"),
    }  # fmt: skip


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """torch.onnx's and torch.jit's chatter (optional-package notes, deprecations) kept off the console."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _write_onnx(policy: Policy, path: Path, meta: dict[str, Any]) -> None:
    example = torch.zeros((2, *policy.observation_shape), dtype=torch.uint8)  # B = 2: the batch dimension stays free
    with _quiet():
        program = torch.onnx.export(policy.network, (example,), None, dynamo=True, verbose=False,
                                    opset_version=ONNX_OPSET, input_names=[INPUT], output_names=[OUTPUT],
                                    dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))  # fmt: skip
    program.model.metadata_props["drq"] = json.dumps(meta)
    program.save(str(path))


def _write_torchscript(policy: Policy, path: Path, meta: dict[str, Any]) -> None:
    example = torch.zeros((1, *policy.observation_shape), dtype=torch.uint8)
    with _quiet(), torch.no_grad():
        frozen = torch.jit.freeze(torch.jit.trace(policy.network, example).eval())
        torch.jit.save(frozen, str(path), _extra_files={"drq.json": json.dumps(meta)})


def _run_exported(fmt: str, path: Path) -> Any:
    """A function uint8 ``(B, 3k, S, S)`` numpy -> float32 ``(B, A)`` numpy running the written file."""
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return lambda obs: session.run([OUTPUT], {INPUT: obs})[0]
    with _quiet():
        module = torch.jit.load(str(path), map_location="cpu")

    def run(obs: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(obs)).numpy()

    return run


def export(source: str | Path, fmt: str, out: str | Path | None = None, check: int = 64) -> dict[str, Any]:
    """Write the policy of the agent in ``source`` (a run dir or a snapshot) as ``fmt`` (``'onnx'`` |
    ``'torchscript'``) to ``out`` with its JSON sidecar ``out.json``; then run the file on ``check`` random
    observations against the in-process policy. Returns the paths, the metadata and the largest difference."""
    if fmt not in FORMATS:
        raise ValueError(f"--format {fmt!r}: one of {', '.join(FORMATS)}")
    if fmt == "onnx":
        for module in ("onnx", "onnxscript", "onnxruntime"):
            try:
                __import__(module)
            except ImportError:
                raise ValueError(f"--format onnx needs {module}, part of {EXTRA}") from None
    policy = load_policy(source)  # fp32 on the CPU: the graph is traced and checked there
    path = Path(out) if out else policy.source.parent / f"policy{FORMATS[fmt]}"
    if path.is_dir():
        raise ValueError(f"--out {path} is a directory: name the file, e.g. {path / ('policy' + FORMATS[fmt])}")
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = metadata(policy, fmt, path)
    sidecar = path.with_name(path.name + ".json")
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:  # written under a temporary name, then renamed: an interrupted export leaves no half file
        (_write_onnx if fmt == "onnx" else _write_torchscript)(policy, tmp, meta)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    sidecar.write_text(json.dumps(meta, indent=1) + "\n")
    observations = np.random.default_rng(0).integers(0, 256, (check, *policy.observation_shape), dtype=np.uint8)
    diff = float(np.abs(_run_exported(fmt, path)(observations) - policy.act_on_observation(observations)).max())
    return {"file": str(path), "metadata": str(sidecar), "format": fmt, "parity_max_abs_diff": diff,
            "observations": check}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m drq.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="a run dir (holding snapshot.pt) or a snapshot file")
    parser.add_argument("--format", required=True, choices=list(FORMATS), help="onnx | torchscript")
    parser.add_argument("--out", default=None, help="the file to write (default RUN_DIR/policy.onnx or policy.pt); "
                                                    "its metadata goes to OUT.json")  # fmt: skip
    args = parser.parse_args(argv)
    try:
        result = export(args.source, args.format, args.out)
    except (snapshots.SnapshotError, ValueError, OSError) as error:
        print(f"drq.export: {error}", file=sys.stderr)
        return 1
    print(f"wrote {result['file']} and {result['metadata']}; on {result['observations']} random observations "
          f"the file's actions differ from the policy's by at most {result['parity_max_abs_diff']:.1e}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
