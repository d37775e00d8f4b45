"""drq: pixel-based off-policy RL on DeepMind Control (DrQ-v2 and SAC) in PyTorch.

Submodules are imported on demand; importing ``drq`` itself is cheap and touches no GL backend.

Importing ``drq`` (or ``replay``) before torch allocates anything asks torch's CPU allocator to back large tensors
with transparent huge pages (``THP_MEM_ALLOC_ENABLE=1``, a documented torch setting; set it to 0 to opt out): every
update allocates tens of MB of activations, and without huge pages the page faults cost ~1.6x in update time on a
2-core CPU (measured with bench/update.py).
"""

import os

os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

__version__ = "0.1.0"
