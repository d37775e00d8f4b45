"""``replay_storage=auto|ram|disk``: where the replay's frames live, decided once before the replay is built.

- ``ram``: frames in memory on the run's device (as before issue 22).
- ``disk``: frames in a memory-mapped file in the run dir (``RUN_DIR/replay/frames.u8``), read through the page
  cache: for machines whose RAM is smaller than the buffer (1M transitions at 84x84 = 21.2 GB).
- ``auto``: ``ram`` when the replay's final size fits in the usable memory with :data:`PROCESS_ALLOWANCE` to spare
  for the rest of the process, else ``disk``.

:func:`choose` is a pure function of byte counts (the pre-run memory check calls it too); :func:`replay_final_bytes`
says what the replay will hold at the end of the run. No torch import: the config checks run before torch loads.
"""

from __future__ import annotations

from typing import NamedTuple

from drq.memory import format_size

CHOICES = ("auto", "ram", "disk")
PROCESS_ALLOWANCE = 3 * 2**30  # bytes kept for the interpreter, torch, the agent, the renderer and the batches


class StorageDecision(NamedTuple):
    storage: str  # "ram" or "disk"
    reason: str  # one line for the start of the run


def replay_final_bytes(capacity: int, num_train_frames: int, action_repeat: int, frame_bytes: int,
                       meta_bytes: int = 64) -> int:
    """Bytes the replay holds at the end of a run: ``min(capacity, steps the run adds)`` x (frame + metadata).

    ``capacity``: transitions; ``num_train_frames``: frames (one replay step per ``action_repeat`` frames);
    ``frame_bytes``: one stored frame (3 x H x W uint8); ``meta_bytes``: action, reward, discount, t, last."""
    steps = num_train_frames // max(1, action_repeat) + 1
    return min(capacity, steps) * (frame_bytes + meta_bytes)


def choose(requested: str, needed_bytes: int, usable_bytes: int | None,
           allowance_bytes: int = PROCESS_ALLOWANCE) -> StorageDecision:
    """``requested`` (auto | ram | disk) and the replay's final size -> the storage and why, in one line.

    ``usable_bytes``: what the process may use (``drq.memory.usable_ram_bytes()``, or the GPU's free memory when the
    frames would live there); None (unknown) makes ``auto`` pick ``ram``, as before issue 22."""
    if requested not in CHOICES:
        raise ValueError(f"replay_storage={requested!r}: expected one of {', '.join(CHOICES)}")
    size = format_size(needed_bytes)
    if requested != "auto":
        return StorageDecision(requested, f"replay_storage={requested}: {size} of replay")
    if usable_bytes is None:
        return StorageDecision("ram", f"replay_storage=auto -> ram: {size} of replay, usable memory unknown")
    room = format_size(usable_bytes)
    if needed_bytes + allowance_bytes <= usable_bytes:
        return StorageDecision("ram", f"replay_storage=auto -> ram: {size} of replay + {format_size(allowance_bytes)} "
                                      f"for the process fit in {room} usable")  # fmt: skip
    return StorageDecision("disk", f"replay_storage=auto -> disk: {size} of replay + {format_size(allowance_bytes)} "
                                   f"for the process exceed {room} usable; frames memory-mapped in the run dir")
