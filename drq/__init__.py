"""drq: pixel-based off-policy RL on DeepMind Control (DrQ-v2 and SAC) in PyTorch.

Submodules are imported on demand; importing ``drq`` itself is cheap, touches no GL backend and changes nothing in
the process: the speed settings of the entry points (huge pages, passive OpenMP waiting, glibc keeping freed memory)
are :func:`drq.machine.process_tuning.tune_process`, which ``train.py``, ``python -m drq.evaluate`` and the benches call before
torch is imported.

``drq.load_policy(RUN_DIR)`` gives a trained agent's policy to act with in your own loop (:mod:`drq.policy`; torch is
imported on that first use).
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["Policy", "load_policy"]


def __getattr__(name: str) -> Any:
    """``load_policy`` and ``Policy`` load :mod:`drq.policy` (and torch) on first use."""
    if name in __all__:
        from drq import policy

        return getattr(policy, name)
    raise AttributeError(f"module 'drq' has no attribute {name!r}")
