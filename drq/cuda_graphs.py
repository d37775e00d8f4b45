"""Whole-update CUDA graphs: capture an agent's update once per branch, then replay it with new inputs.

An update is ~60 small kernels (convs, Linear layers, Adam over ~20 tensors, soft update); at batch 256 on a modern GPU
most of them take microseconds, so launching them from Python costs more than running them. ``GraphedUpdate`` records
the whole update -- forward, backward, both optimiser steps, soft update, metrics -- as one CUDA graph and replays it:

    graphed = GraphedUpdate(agent.update_tensors, warmup=3)
    metrics = graphed(key, (obs, action, reward, discount, next_obs), {"std": 0.4})

- ``key`` names the branch (SAC: whether this update also steps the actor and the target; DrQ-v2: always ``()``); each
  key gets its own graph, captured after ``warmup`` eager calls with that key (they initialise the optimiser state and
  let cuDNN pick its algorithms).
- ``tensors`` are copied into static input buffers before each replay; ``scalars`` (a schedule's value) go into 0-dim
  device tensors, so the graph reads the current value instead of the one seen at capture.
- The returned metrics are the graph's static outputs: valid until the same key is replayed again (the trainer adds
  them to its device-side sums at once).

Requirements, checked or set by ``DrQV2Agent/SACAgent.enable_cuda_graphs``: the optimisers are ``capturable`` (their
step counter lives on the GPU), autocast runs with ``cache_enabled=False``, and the update has no host syncs (ours has
none). Random numbers (shifts, policy noise) come from the default CUDA generator, which PyTorch registers with every
graph, so each replay draws fresh ones.

``capture=False`` runs the same static-buffer path without recording (any device): the tests use it on CPU to check the
plumbing; real capture needs a GPU.
"""

from __future__ import annotations

from typing import Callable, Hashable, Mapping, Sequence

import torch

__all__ = ["GraphedUpdate"]

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
        warmup: eager calls per key before capturing (>= 1: the optimisers must have their state before capture).
        capture: record a CUDA graph (needs CUDA tensors); ``False`` calls ``fn`` on the static buffers each time.
    """

    def __init__(self, fn: UpdateFn, warmup: int = 3, capture: bool = True) -> None:
        if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 1:
            raise ValueError(f"GraphedUpdate: warmup must be an int >= 1, got {warmup!r}")
        self.fn, self.warmup, self.capture = fn, warmup, bool(capture)
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

    # ----------------------------------------------------------------------------------------------------------------
    def _eager(self, key: Hashable, tensors: Sequence[torch.Tensor],
               scalars: Mapping[str, float]) -> Mapping[str, torch.Tensor]:
        device = tensors[0].device
        scalar_tensors = {k: torch.tensor(float(v), device=device) for k, v in scalars.items()}
        if not (self.capture and device.type == "cuda"):
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
        device = graph.inputs[0].device
        if device.type != "cuda":
            raise RuntimeError(f"GraphedUpdate: CUDA graphs need CUDA tensors, got inputs on {device}; "
                               "use capture=False (or cuda_graphs=false) on other devices")
        torch.cuda.synchronize(device)
        graph.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph.graph):
            graph.outputs = self.fn(key, *graph.inputs, **graph.scalars)
        # capture records the kernels without running them; __call__ replays right after, which performs this update
