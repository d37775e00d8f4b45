"""Replay that stores each frame once and builds frame stacks and n-step returns at sample time."""

from replay.buffer import Batch, FrameReplay

__all__ = ["Batch", "FrameReplay"]
