"""Agents: ``make_agent(name, obs_shape, action_shape, device, precision, compile, cuda_graphs, **cfg)`` and ``AGENTS``.

``cfg`` holds the hydra ``agent:`` group's keys (docs/architecture.md, "Agent constructor keys"); an unknown key is an
error naming it and the valid keys, so a typo in a config cannot be silently ignored.

One module per algorithm (``drqv2``, ``sac``: the update equations in each module's docstring, the update on one
screen in ``update_tensors``); ``core`` holds what both share (shape checks, precision, the CUDA-graph switch, the actor
metrics, state dicts). Values arrive checked by ``drq.config.schema``; an agent never imports its
sibling.
"""

from typing import Any

__all__ = ["AGENTS", "TRAINER_KEYS", "make_agent", "agent_config_keys", "DrQV2Agent", "SACAgent"]


def __getattr__(name: str) -> Any:
    """The factory (and torch with it) loads on first use: ``drq.agents.schedules``, which the config checks import,
    stays free of torch, so a bad value on the command line is refused before torch loads."""
    if name in __all__:
        from drq.agents import factory

        return getattr(factory, name)
    raise AttributeError(f"module 'drq.agents' has no attribute {name!r}")
