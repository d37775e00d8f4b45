"""Shared test setup: choose the MuJoCo GL backend before any test imports dm_control."""

import os

os.environ.setdefault("WANDB_SILENT", "true")

from drq.rendering import setup_rendering  # noqa: E402

setup_rendering()
