"""drq: pixel-based off-policy RL on DeepMind Control (DrQ-v2 and SAC) in PyTorch.

Submodules are imported on demand; importing ``drq`` itself is cheap and touches no GL backend.
"""

__version__ = "0.1.0"
