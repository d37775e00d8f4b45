"""``import drq`` changes nothing in the process; :func:`drq.machine.process_tuning.tune_process` (the entry points') does.

One fresh interpreter (the test session itself is tuned by conftest, so only a new process can tell what an import
does), started without the tuned variables. glibc has no getter for ``mallopt``'s parameters, so the child observes
their effect: with ``mmap`` allowed, a 64 MiB ``malloc`` is its own mapping (``mallinfo2().hblkhd`` grows by it);
after ``mallopt(M_MMAP_MAX, 0)`` it comes from the heap."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import ctypes, json, os, sys

libc = ctypes.CDLL(None)

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]

libc.mallinfo2.restype = MallInfo2
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]

def big_block_is_mapped():
    before = libc.mallinfo2().hblkhd
    block = libc.malloc(64 << 20)
    mapped = libc.mallinfo2().hblkhd - before >= 64 << 20
    libc.free(block)
    return mapped

environ = dict(os.environ)
import drq, replay, drq.run.trainer, drq.agents, drq.evaluate, replay.buffer
out = {"environ_unchanged": dict(os.environ) == environ, "mapped_after_import": big_block_is_mapped()}
from drq.machine.process_tuning import ENVIRONMENT, tune_process
out["tuned"] = tune_process()
out["environment_set"] = all(os.environ[k] == v for k, v in ENVIRONMENT.items())
out["mapped_after_tuning"] = big_block_is_mapped()
print(json.dumps(out))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt / mallinfo2")
def test_import_drq_changes_nothing_and_tune_process_does():
    from drq.machine.process_tuning import ENVIRONMENT

    env = {k: v for k, v in os.environ.items() if k not in ENVIRONMENT and k != "DRQ_MALLOC"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    result = subprocess.run([sys.executable, "-c", CHILD], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out == {"environ_unchanged": True, "mapped_after_import": True, "tuned": True, "environment_set": True,
                   "mapped_after_tuning": False}  # fmt: skip
