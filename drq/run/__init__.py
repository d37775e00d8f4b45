"""One training run: the trainer and its parts, evaluation, snapshots, sinks, video, the run-dir lock, the health monitor, provenance."""
