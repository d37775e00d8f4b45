"""Shared test setup: choose the MuJoCo GL backend before any test imports dm_control; helpers several tests use."""

from __future__ import annotations

import os
from typing import Any

os.environ.setdefault("WANDB_SILENT", "true")
# The pre-run memory check (drq.run_footprint) compares a config with the machine's free RAM, which varies with what
# else runs; tests see a large machine, and tests/test_memory_check.py makes it small where it means to.
os.environ.setdefault("DRQ_MEMORY_LIMIT", "1T")

from drq.rendering import setup_rendering  # noqa: E402

setup_rendering()

import torch  # noqa: E402


def flat_state(state: Any) -> dict[str, Any]:
    """Every leaf of a nested state (dicts, lists, tuples, e.g. a snapshot or ``agent.state_dict()``) under its dotted
    path (``.critic.Q1.0.weight``, ``.critic_opt.param_groups.0.lr``): tensors detached and on the CPU, other leaves
    (numbers, strings, None) as they are."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, torch.Tensor):
            flat[prefix] = node.detach().cpu()
        elif isinstance(node, dict):
            for k, v in node.items():
                walk(f"{prefix}.{k}", v)
        elif isinstance(node, (list, tuple)):
            for i, v in enumerate(node):
                walk(f"{prefix}.{i}", v)
        else:
            flat[prefix] = node

    walk("", state)
    return flat


def assert_same_state(a: Any, b: Any, what: str = "state") -> int:
    """Assert two nested states are equal leaf by leaf: the same paths, tensors of the same dtype and shape with the
    same bits (``torch.equal``), other leaves ``==``. Returns how many tensors were compared (callers assert it is
    more than a handful, so that an empty state cannot pass)."""
    fa, fb = flat_state(a), flat_state(b)
    assert fa.keys() == fb.keys(), f"{what}: paths differ: {sorted(fa.keys() ^ fb.keys())[:10]}"
    tensors = 0
    for k, va in fa.items():
        vb = fb[k]
        if isinstance(va, torch.Tensor):
            assert isinstance(vb, torch.Tensor) and va.dtype == vb.dtype and torch.equal(va, vb), f"{what}: {k}"
            tensors += 1
        else:
            assert va == vb, f"{what}: {k}: {va!r} != {vb!r}"
    return tensors
