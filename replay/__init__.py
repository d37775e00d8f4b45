"""Replay that stores each frame once and builds frame stacks and n-step returns at sample time.

``FrameReplay`` and ``Batch`` are imported with :mod:`replay.buffer` (torch) on first use, so that
:mod:`replay.segment_names` (no torch) can be read by the pre-run checks before torch is loaded."""

from __future__ import annotations

from typing import Any

__all__ = ["Batch", "FrameReplay"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from replay import buffer

        return getattr(buffer, name)
    raise AttributeError(f"module 'replay' has no attribute {name!r}")
