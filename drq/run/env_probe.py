"""train.py's check of a Gymnasium env before hydra writes the run dir: the env each run of the command line would
train on, built once and stepped a few frames (:func:`drq.envs.gym_probe.probe`, in a worker process).

The config schema already refused what needs no env (an unknown id, a module that does not import, a missing package
extra: ``gym.id``'s check); this is what only a built env shows: a Discrete or unbounded action space, no picture or
one that is not uint8 (H, W, 3). Each is one line (:class:`drq.config.schema.ConfigError`: ``drq: ...``, exit 2). A
camera that sees almost nothing is one warning line on stderr, and the run goes on. DMC tasks are not probed (their
envs are drq's own). A sweep sent to other machines is not probed here (each job's env fails there, in one line).
"""

from __future__ import annotations

import json
import sys

__all__ = ["refuse_before_hydra"]


def refuse_before_hydra(argv: list[str]) -> None:
    """:class:`drq.config.schema.ConfigError` (one line) if the Gymnasium env of a run of ``argv``
    (``sys.argv[1:]``) cannot be trained on from pixels; a camera warning is printed. Each distinct env once."""
    from drq.config import errors, launchers, schema

    overrides = errors.parse(argv, hydra=False)
    if not any(o.key_or_group == "task" or o.key_or_group.startswith("gym.") for o in overrides):
        return  # no Gymnasium env asked for: nothing to build (the default task is a DMC one)
    combos = errors.combinations(overrides)
    if launchers.multirun(argv) and launchers.machine(argv, len(combos)).remote:
        return
    from drq.envs import gym_probe
    from drq.run.build import env_factory

    seen = set()
    for cfg in errors.compose(combos):
        if isinstance(cfg, str):
            continue  # a composition error: check_overrides has said it already
        config = schema.load(cfg, rules=False)
        if config.gym.id is None:
            continue
        factory = env_factory(config)
        identity = json.dumps(factory.keywords, sort_keys=True, default=str)
        if identity in seen:
            continue
        seen.add(identity)
        try:
            warning = gym_probe.probe(factory, config.gym.id, config.gym.kwargs)
        except ValueError as error:  # GymEnvError, GymIdError, an env argument: each one line
            raise schema.ConfigError(str(error).strip().splitlines()[0]) from None
        if warning:
            print(f"drq: warning: {warning}", file=sys.stderr, flush=True)
