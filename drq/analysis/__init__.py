"""The analysis wing: tools that read a run's (or a sweep's) files after the fact. Nothing in the training path
(``train.py``, ``drq.run.trainer``, the agents, env, replay, sinks, snapshots) imports this package.

* ``python -m drq.analysis.health RUN_DIR`` -- ``health.py``: the offline health report (``health.png`` + a verdict
  per signal) from ``metrics.jsonl``, using the detector of ``drq.run.health``;
* ``python -m drq.analysis.report SWEEP_DIR`` -- ``report.py``: the sweep report (per-task tables, IQM with
  bootstrap CIs, curves, performance profiles) from every run's ``eval.csv``;
* ``python -m drq.analysis.dashboard --entity E --project P`` -- ``dashboard.py``: a saved wandb workspace with the
  same panels as the offline report.
"""
