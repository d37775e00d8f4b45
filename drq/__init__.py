"""drq: pixel-based off-policy RL on DeepMind Control (DrQ-v2 and SAC) in PyTorch.

Submodules are imported on demand; importing ``drq`` itself is cheap and touches no GL backend.

Importing ``drq`` (or ``replay``) before torch allocates anything asks torch's CPU allocator to back large tensors
with transparent huge pages (``THP_MEM_ALLOC_ENABLE=1``, a documented torch setting; set it to 0 to opt out): every
update allocates tens of MB of activations, and without huge pages the page faults cost ~1.6x in update time on a
2-core CPU (measured with bench/update.py). It also sets ``OMP_WAIT_POLICY=PASSIVE``: with the environment worker
(or anything else) on the same cores, spinning OpenMP threads wait for a preempted peer and updates slowed 2-10x on
this 2-core machine; passive waiting removes most of that. Both are ``setdefault``: a value you export wins.
"""

import os

os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
