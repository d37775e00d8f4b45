"""Whole-update CUDA graphs: capture an agent's update once per branch, then replay it with new inputs.

An update is ~60 small kernels (convs, Linear layers, Adam over ~20 tensors, soft update); at batch 256 on a modern GPU
most of them take microseconds, so launching them from Python costs more than running them. ``GraphedUpdate`` records
the whole update -- forward, backward, both optimiser steps, soft update, metrics -- as one CUDA graph and replays it:

    graphed = GraphedUpdate(agent.update_tensors, optimizers, device, warmup=3)
    metrics = graphed(key, (obs, action, reward, discount, next_obs), {"std": 0.4})

- ``key`` names the branch (SAC: whether this update also steps the actor and the target; DrQ-v2: always ``()``); each
  key gets its own graph, captured after ``warmup`` eager calls with that key (they initialise the optimiser state and
  let cuDNN pick its algorithms).
- ``tensors`` are copied into static input buffers before each replay; ``scalars`` (a schedule's value) go into 0-dim
  device tensors, so the graph reads the current value instead of the one seen at capture.
- The returned metrics are the graph's static outputs: valid until the same key is replayed again (the trainer adds
  them to its device-side sums at once).

Requirements: the device is CUDA (checked here), the optimisers are ``capturable`` (set here, and again on ``reset``
after their state was reloaded), autocast runs with ``cache_enabled=False`` (the agents do this while graphed), and the
update has no host syncs (ours has none). Random numbers (shifts, policy noise) come from the default CUDA generator, which PyTorch registers with every
graph, so each replay draws fresh ones.

``capture=False`` runs the same static-buffer path without recording (any device): the tests use it on CPU to check the
plumbing; real capture needs a GPU.
"""

from __future__ import annotations

from typing import Callable, Hashable, Mapping, Sequence

import torch

__all__ = ["GRAPH_CHOICES", "GraphedUpdate", "cuda_graphs_wanted"]

GRAPH_CHOICES = ("auto", "on", "off")  # the bench scripts' --cuda-graphs


def cuda_graphs_wanted(choice: str, device: torch.device | str) -> bool:
    """``--cuda-graphs`` as a bool: ``'on'``, ``'off'``, or ``'auto'`` (on exactly when ``device`` is CUDA; ``'auto'``
    as a device means CUDA when one is available)."""
    if choice not in GRAPH_CHOICES:
        raise ValueError(f"cuda graphs must be one of {list(GRAPH_CHOICES)}, got {choice!r}")
    if str(device) == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return choice == "on" or (choice == "auto" and torch.device(device).type == "cuda")

UpdateFn = Callable[..., Mapping[str, torch.Tensor]]


class _Graph:
    """One captured branch: static inputs, static scalar tensors, the graph and its outputs."""

    def __init__(self, tensors: Sequence[torch.Tensor], scalars: Mapping[str, float], device: torch.device) -> None:
        self.inputs = [t.detach().clone() for t in tensors]
        self.scalars = {k: torch.tensor(float(v), device=device) for k, v in scalars.items()}
        self.graph: torch.cuda.CUDAGraph | None = None
        self.outputs: Mapping[str, torch.Tensor] = {}

    def load(self, tensors: Sequence[torch.Tensor], scalars: Mapping[str, float]) -> None:
        if len(tensors) != len(self.inputs):
            raise ValueError(f"GraphedUpdate: captured with {len(self.inputs)} input tensors, got {len(tensors)}")
        for static, t in zip(self.inputs, tensors):
            if static.shape != t.shape or static.dtype != t.dtype:
                raise ValueError(f"GraphedUpdate: input {tuple(t.shape)} {t.dtype} does not match the captured "
                                 f"{tuple(static.shape)} {static.dtype}; keep the batch size fixed")
            static.copy_(t, non_blocking=True)
        for k, v in scalars.items():
            self.scalars[k].fill_(float(v))


class GraphedUpdate:
    """Capture ``fn(key, *tensors, **scalar_tensors) -> {name: 0-dim tensor}`` once per ``key`` and replay it.

    Args:
        fn: the update; called with the branch key, the static input tensors and the scalars as 0-dim tensors.
        optimizers: the optimisers ``fn`` steps (made ``capturable``).
        device: where the update runs; must be CUDA when ``capture``.
        warmup: eager calls per key before capturing (>= 1: the optimisers must have their state before capture).
        capture: record a CUDA graph (needs CUDA tensors); ``False`` calls ``fn`` on the static buffers each time.
    """

    def __init__(self, fn: UpdateFn, optimizers: Sequence[torch.optim.Optimizer], device: torch.device | str,
                 warmup: int = 3, capture: bool = True) -> None:
        if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 1:
            raise ValueError(f"GraphedUpdate: warmup must be an int >= 1, got {warmup!r}")
        device = torch.device(device)
        if capture and device.type != "cuda":
            raise ValueError(f"cuda_graphs=true needs a CUDA device, got device {str(device)!r}; choices: "
                             "cuda_graphs=false, or device=cuda / device=auto on a machine with a GPU")
        self.fn, self.warmup, self.capture = fn, warmup, bool(capture)
        self.optimizers = tuple(optimizers)
        self._make_capturable()
        self.graphs: dict[Hashable, _Graph] = {}
        self.calls: dict[Hashable, int] = {}
        self._side_stream: torch.cuda.Stream | None = None

    def __call__(self, key: Hashable, tensors: Sequence[torch.Tensor],
                 scalars: Mapping[str, float]) -> Mapping[str, torch.Tensor]:
        n = self.calls.get(key, 0)
        self.calls[key] = n + 1
        if n < self.warmup:
            return self._eager(key, tensors, scalars)
        graph = self.graphs.get(key)
        if graph is None:
            graph = self.graphs[key] = _Graph(tensors, scalars, tensors[0].device)
            if self.capture:
                self._capture(key, graph)
        graph.load(tensors, scalars)
        if graph.graph is None:
            graph.outputs = self.fn(key, *graph.inputs, **graph.scalars)
        else:
            graph.graph.replay()
        return graph.outputs

    def reset(self) -> None:
        """Forget every graph (after loading new parameters or optimiser state: the graphs point at the old ones)."""
        self.graphs.clear()
        self.calls.clear()
        self._make_capturable()  # load_state_dict replaces the optimisers' param_groups

    def _make_capturable(self) -> None:
        # Optimizer.step refuses to be captured unless every group says capturable; our Adams are fused, so their step
        # counters already live on the device and the flag is all that changes.
        for opt in self.optimizers:
            for group in opt.param_groups:
                group["capturable"] = True

    # ----------------------------------------------------------------------------------------------------------------
    def _eager(self, key: Hashable, tensors: Sequence[torch.Tensor],
               scalars: Mapping[str, float]) -> Mapping[str, torch.Tensor]:
        device = tensors[0].device
        scalar_tensors = {k: torch.tensor(float(v), device=device) for k, v in scalars.items()}
        if not self.capture:
            return self.fn(key, *tensors, **scalar_tensors)
        # Warm up on a side stream, as the CUDA-graph docs ask (lazy cuBLAS/cuDNN state is created off the capture).
        if self._side_stream is None:
            self._side_stream = torch.cuda.Stream(device)
        stream = self._side_stream
        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(stream):
            out = self.fn(key, *tensors, **scalar_tensors)
        torch.cuda.current_stream(device).wait_stream(stream)
        return out

    def _capture(self, key: Hashable, graph: _Graph) -> None:
        torch.cuda.synchronize(graph.inputs[0].device)
        graph.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph.graph):
            graph.outputs = self.fn(key, *graph.inputs, **graph.scalars)
        # capture records the kernels without running them; __call__ replays right after, which performs this update
