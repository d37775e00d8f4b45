"""Replay that stores each frame once and builds frame stacks and n-step returns at sample time."""

import os

os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")  # huge pages for large CPU tensors; see drq/__init__.py

from replay.buffer import Batch, FrameReplay  # noqa: E402

__all__ = ["Batch", "FrameReplay"]
