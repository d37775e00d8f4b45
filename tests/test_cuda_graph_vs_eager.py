"""A graphed update trains like the eager one: parameters and metrics compared after several updates, with tolerances.

Two agents start from the same weights and the same RNG seed; one runs ``agent.update`` eagerly, the other through
``drq.speed.cuda_graphs.GraphedUpdate`` (warm-up calls, then one captured graph per branch, replayed with fresh inputs).
Both see the same batches, so after ``STEPS`` updates their metrics (every step) and their parameters must agree.
Random numbers match too: PyTorch's graph-safe Philox offsets make a replay draw what the same ops would draw eagerly.

Tolerances (``TOLERANCES``), per precision:
- metrics, every step and every metric: ``|graphed - eager| <= atol + rtol * |eager|``;
- parameters (every tensor of the encoder, actor, critic, target critic, and SAC's log alpha), after ``STEPS``
  updates: ``||graphed - eager|| <= param_rel * ||eager - initial||`` (L2 per tensor: the disagreement must be small
  next to how far training moved the tensor; an exact-zero-gradient tensor must stay equal).
They allow the GPU's run-to-run noise (atomics in convolution backward, capturable vs plain fused Adam rounding), which
Adam can spread over a few updates, and nothing more: a graph trained on a stale batch or a frozen std misses by
orders of magnitude (``test_planted_bug_fails_the_comparison``).

Where it runs:
- CUDA (``capture=True``, the real graphs): ``test_cuda_graphs_train_like_eager``, both agents, both SAC branches
  (actor + target step on even steps, critic only on odd ones), fp32 and bf16. Skipped without a GPU;
  ``bench/gpu/check.sh`` runs it on the GPU machine.
- CPU (``capture=False``): the same comparison through ``GraphedUpdate``'s static-buffer path -- the inputs copied
  into the buffers captured at the first non-warm-up call, the schedule's std written into a 0-dim tensor, the update
  called on those buffers -- which is everything a replay depends on except the recording itself. What this stand-in
  cannot show: a value baked in at the Python level inside ``update_tensors`` (the stand-in re-runs Python each call);
  the CUDA test covers that.
- Planted bugs, on CPU (and on CUDA when present): ``_Graph.load`` patched to (a) leave one static input stale (the
  ``next_obs`` buffer keeps the capture batch) and (b) leave the std tensor at its capture value (the std baked into
  the graph). The comparison must fail for each.
"""

from __future__ import annotations

import pytest
import torch

import drq.speed.cuda_graphs as cuda_graphs
from drq.agents import make_agent
from tests.test_agents import SMALL, A, Batch

STEPS = 8  # SAC: branch (actor, target) on even steps, (critic only) on odd ones: each gets 1 warm-up + 3 replays
WARMUP = 1
FAST_STD = "linear(1.0,0.1,10)"  # DrQ-v2's std moves 0.09 per step: a std frozen at capture shows
TOLERANCES = {
    "fp32": {"rtol": 1e-3, "atol": 1e-4, "param_rel": 1e-2},
    "bf16": {"rtol": 2e-2, "atol": 1e-2, "param_rel": 5e-2},
}
HAS_CUDA = torch.cuda.is_available()


def _obs_shape(device: str) -> tuple[int, int, int]:
    return (9, 84, 84) if device == "cuda" else (9, 24, 24)  # CPU: small frames, same code (cheap enough for CI)


def _agent(name: str, precision: str, device: str):
    cfg = dict(SMALL, **({"stddev_schedule": FAST_STD} if name == "drqv2" else {}))
    torch.manual_seed(0)
    return make_agent(name, _obs_shape(device), (A,), device, precision, **cfg)


def _batch(step: int, device: str, b: int = 8) -> Batch:
    g = torch.Generator().manual_seed(100 + step)
    shape = (b, *_obs_shape(device))
    obs = torch.randint(0, 256, shape, generator=g, dtype=torch.uint8)
    next_obs = torch.randint(0, 256, shape, generator=g, dtype=torch.uint8)
    action = torch.rand(b, A, generator=g) * 2 - 1
    reward = torch.rand(b, 1, generator=g) * 3
    discount = torch.rand(b, 1, generator=g).round() * 0.99 ** 3  # some episode ends
    return Batch(*(t.to(device) for t in (obs, action, reward, discount, next_obs)))


def _weights(agent) -> dict[str, torch.Tensor]:
    """Every network tensor (encoder, actor, critic, critic target, ...) and SAC's log alpha, by dotted name."""
    out = {}
    for part, value in agent.state_dict().items():
        if part.endswith("_opt"):
            continue
        if isinstance(value, torch.Tensor):
            out[part] = value.detach().float().clone()
        else:
            out.update({f"{part}.{k}": v.detach().float().clone() for k, v in value.items()
                        if isinstance(v, torch.Tensor) and v.is_floating_point()})
    return out


def _train(agent, device: str, steps: int = STEPS) -> list[dict[str, torch.Tensor]]:
    torch.manual_seed(1)  # seeds the CPU and every CUDA generator: both runs draw the same shifts and noise
    metrics = []
    for step in range(steps):
        out = agent.update(_batch(step, device), step)
        metrics.append({k: v.detach().float().clone() for k, v in out.items()})  # replays overwrite the outputs
    return metrics


def compare_graphed_to_eager(name: str, precision: str, device: str, capture: bool) -> list[str]:
    """Train an eager and a graphed agent side by side; return the list of disagreements beyond ``TOLERANCES``
    (empty when they agree). Also checks that the graphed side really used its graphs (one per branch)."""
    tol = TOLERANCES[precision]
    eager, graphed = _agent(name, precision, device), _agent(name, precision, device)
    graphed.enable_cuda_graphs(warmup=WARMUP, capture=capture)
    initial = _weights(eager)
    m_eager, m_graphed = _train(eager, device), _train(graphed, device)

    branches = {()} if name == "drqv2" else {(True, True), (False, False)}
    assert set(graphed.graphed_update.graphs) == branches
    if capture:
        assert all(g.graph is not None for g in graphed.graphed_update.graphs.values())

    problems = []
    for step, (a, b) in enumerate(zip(m_eager, m_graphed)):
        assert a.keys() == b.keys()
        for k in sorted(a):
            err, bound = (b[k] - a[k]).abs().item(), tol["atol"] + tol["rtol"] * a[k].abs().item()
            if not err <= bound:
                problems.append(f"step {step} metric {k}: eager {a[k].item():.6g} graphed {b[k].item():.6g} "
                                f"(|diff| {err:.3g} > {bound:.3g})")
    w_eager, w_graphed = _weights(eager), _weights(graphed)
    for k, e in w_eager.items():
        diff = torch.linalg.vector_norm(w_graphed[k] - e).item()
        moved = torch.linalg.vector_norm(e - initial[k]).item()
        if not diff <= tol["param_rel"] * moved:
            problems.append(f"parameter {k}: ||graphed - eager|| {diff:.3g} > {tol['param_rel']} x "
                            f"||eager - initial|| {moved:.3g}")
    return problems


# --------------------------------------------------------------------------------------------------------------------
@pytest.mark.skipif(not HAS_CUDA, reason="CUDA graph capture needs a GPU (bench/gpu/check.sh runs this on one)")
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("name", ["drqv2", "sac"])
def test_cuda_graphs_train_like_eager(name, precision):
    problems = compare_graphed_to_eager(name, precision, "cuda", capture=True)
    assert not problems, "\n".join(problems[:20])


@pytest.mark.parametrize("precision", ["fp32", pytest.param("bf16", marks=pytest.mark.slow)])
@pytest.mark.parametrize("name", ["drqv2", "sac"])
def test_static_buffer_stand_in_trains_like_eager(name, precision):
    problems = compare_graphed_to_eager(name, precision, "cpu", capture=False)
    assert not problems, "\n".join(problems[:20])


def _stale_next_obs(self, tensors, scalars):
    """Planted bug (a): every input is copied except the last (``next_obs``), which keeps the capture batch."""
    for static, t in list(zip(self.inputs, tensors))[:-1]:
        static.copy_(t)
    for k, v in scalars.items():
        self.scalars[k].fill_(float(v))


def _baked_std(self, tensors, scalars):
    """Planted bug (b): inputs copied, scalars never refreshed: the std stays the one seen at capture."""
    for static, t in zip(self.inputs, tensors):
        static.copy_(t)


PLANTED = {"stale_static_input": _stale_next_obs, "std_baked_into_graph": _baked_std}
DEVICES = [("cpu", False)] + ([("cuda", True)] if HAS_CUDA else [])


@pytest.mark.parametrize("device,capture", DEVICES, ids=[d for d, _ in DEVICES])
@pytest.mark.parametrize("precision", ["fp32", pytest.param("bf16", marks=pytest.mark.slow)])
@pytest.mark.parametrize("bug", sorted(PLANTED))
def test_planted_bug_fails_the_comparison(bug, precision, device, capture, monkeypatch):
    monkeypatch.setattr(cuda_graphs._Graph, "load", PLANTED[bug])
    names = ["drqv2"] if bug == "std_baked_into_graph" else ["drqv2", "sac"]  # SAC has no scheduled std
    for name in names:
        problems = compare_graphed_to_eager(name, precision, device, capture)
        assert problems, f"{bug} went unnoticed for {name} {precision} on {device}"
        caught = {p.split(":")[0].split(" ")[-1] for p in problems}  # metric or parameter names
        if bug == "std_baked_into_graph":  # not only the std metric itself: what the std drives moves too
            assert "actor_std" in caught and len(caught) > 1, problems
        else:  # the target computed from the stale next_obs
            assert caught & {"critic_loss", "critic_target_q", "critic_grad_norm"}, problems
