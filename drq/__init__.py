"""drq: pixel-based off-policy RL on DeepMind Control (DrQ-v2 and SAC) in PyTorch.

Submodules are imported on demand; importing ``drq`` itself is cheap, touches no GL backend and changes nothing in
the process: the speed settings of the entry points (huge pages, passive OpenMP waiting, glibc keeping freed memory)
are :func:`drq.machine.process_tuning.tune_process`, which ``train.py``, ``python -m drq.evaluate`` and the benches call before
torch is imported.
"""

__version__ = "0.1.0"
