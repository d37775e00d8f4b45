"""Fast paths: the CUDA-graph update's static-buffer plumbing (on CPU, without recording) and torch.compile.

A CUDA graph replays the kernels it recorded on the buffers it recorded them with, so the ways it goes wrong are: an
input not copied into its static buffer, a schedule value baked in at capture, a branch replaying the wrong graph, or
outputs read after they were overwritten. ``GraphedUpdate(capture=False)`` runs exactly that static-buffer path with
the update called on the buffers instead of recorded, so these tests catch those bugs on CPU; the recording itself
needs a GPU (``test_cuda_graph_capture_*`` runs only where CUDA is available).
"""

import pytest
import torch

from drq.agents import make_agent
from drq.speed.compiling import check_compile_mode, compile_agent, compiled_modules
from drq.speed.cuda_graphs import GraphedUpdate
from tests.test_agents import OBS_SHAPE, SMALL, A, random_batch

FAST_STD = "linear(1.0,0.1,10)"  # changes every step: a std baked into a graph would show


def _agents(name, **kw):
    cfg = dict(SMALL, **({"stddev_schedule": FAST_STD} if name == "drqv2" else {}))
    torch.manual_seed(0)
    eager = make_agent(name, OBS_SHAPE, (A,), "cpu", **kw, **cfg)
    torch.manual_seed(0)
    graphed = make_agent(name, OBS_SHAPE, (A,), "cpu", **kw, **cfg)
    return eager, graphed


def _run(agent, steps, seed=1):
    torch.manual_seed(seed)
    metrics = []
    for step in range(steps):
        out = agent.update(random_batch(seed=100 + step), step)
        metrics.append({k: v.clone() for k, v in out.items()})  # graph outputs are overwritten by the next replay
    return metrics


@pytest.mark.parametrize("name", ["drqv2", "sac"])
def test_static_buffer_update_equals_the_eager_update(name):
    eager, graphed = _agents(name)
    graphed.enable_cuda_graphs(warmup=2, capture=False)
    steps = 9  # SAC: branches (actor, target) on even steps, (critic only) on odd ones; each passes its warmup
    m_eager, m_graphed = _run(eager, steps), _run(graphed, steps)
    assert set(graphed.graphed_update.graphs) == ({()} if name == "drqv2" else {(True, True), (False, False)})
    for step, (a, b) in enumerate(zip(m_eager, m_graphed)):
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), (step, k, a[k], b[k])
    for (n, p), q in zip(eager.critic.named_parameters(), graphed.critic.parameters()):
        assert torch.equal(p, q), n
    for p, q in zip(eager.actor.parameters(), graphed.actor.parameters()):
        assert torch.equal(p, q)
    if name == "drqv2":  # the schedule reached the graph: the std metric follows it step by step
        assert [round(m["actor_std"].item(), 6) for m in m_graphed[:4]] == [1.0, 0.91, 0.82, 0.73]


def test_static_inputs_are_refreshed_and_batch_shape_is_checked():
    calls = []

    def fn(key, x, *, s):
        calls.append((key, x.clone(), s.clone()))
        return {"y": x.sum() * s}

    g = GraphedUpdate(fn, (), "cpu", warmup=1, capture=False)
    out = [g("k", (torch.full((2,), float(i)),), {"s": i + 1.0})["y"].item() for i in range(4)]
    assert out == [0.0, 2 * 1 * 2, 2 * 2 * 3, 2 * 3 * 4]
    assert set(g.graphs) == {"k"} and g.calls["k"] == 4
    with pytest.raises(ValueError, match=r"does not match the captured \(2,\)"):
        g("k", (torch.zeros(3),), {"s": 1.0})
    with pytest.raises(ValueError, match="warmup must be an int >= 1"):
        GraphedUpdate(fn, (), "cpu", warmup=0)


def test_load_state_dict_recaptures():
    _, agent = _agents("drqv2")
    agent.enable_cuda_graphs(warmup=1, capture=False)
    _run(agent, 3)
    assert agent.graphed_update.graphs
    agent.load_state_dict(agent.state_dict())
    assert not agent.graphed_update.graphs and all(g["capturable"] for g in agent.critic_opt.param_groups)


def test_cuda_graphs_on_cpu_is_one_clear_error():
    with pytest.raises(ValueError, match="cuda_graphs=true needs a CUDA device, got device 'cpu'"):
        make_agent("sac", OBS_SHAPE, (A,), "cpu", cuda_graphs=True, **SMALL)
    with pytest.raises(ValueError, match=r"compile must be one of \['none', 'default', 'max-autotune'\]"):
        make_agent("sac", OBS_SHAPE, (A,), "cpu", compile="fast", **SMALL)
    assert check_compile_mode(True) == "default" and check_compile_mode(False) == "none"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graph capture needs a GPU")
@pytest.mark.parametrize("name", ["drqv2", "sac"])
def test_cuda_graph_capture_trains_like_eager(name):
    cfg = dict(SMALL, **({"stddev_schedule": FAST_STD} if name == "drqv2" else {}))
    torch.manual_seed(0)
    agent = make_agent(name, OBS_SHAPE, (A,), "cuda", cuda_graphs=True, **cfg)
    before = [p.detach().clone() for p in agent.critic.parameters()]
    metrics = []
    for step in range(8):
        batch = type(random_batch())(*(t.cuda() for t in random_batch(seed=100 + step)))
        metrics.append({k: v.clone() for k, v in agent.update(batch, step).items()})
    assert agent.graphed_update.graphs and all(g.graph is not None for g in agent.graphed_update.graphs.values())
    assert all(torch.isfinite(v).all() for m in metrics for v in m.values())
    assert any(not torch.equal(b, p) for b, p in zip(before, agent.critic.parameters()))
    losses = [m["critic_loss"].item() for m in metrics]
    assert len(set(losses)) == len(losses)  # every replay saw its own batch


@pytest.mark.parametrize("name", ["drqv2", "sac"])
def test_compiled_networks_compute_the_eager_update(name):
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    eager, compiled = _agents(name, compile="none")
    compile_agent(compiled, "default")
    assert all(m._compiled_call_impl is not None for m in compiled_modules(compiled))
    m_eager, m_compiled = _run(eager, 2), _run(compiled, 2)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 4  # the networks really went through dynamo
    for k, v in m_eager[0].items():  # the first update: losses, Q values, log-probs and all three gradient norms
        torch.testing.assert_close(m_compiled[0][k], v, rtol=2e-4, atol=1e-5, msg=k)
    assert compiled.state_dict()["critic"].keys() == eager.state_dict()["critic"].keys()  # snapshots unchanged


def test_run_config_keys_reach_the_agent():
    from drq.config.schema import defaults
    from drq.run.build import make_agent_from_config

    base = defaults("sac")  # a whole run config (cfgs/config.yaml + cfgs/agent/sac.yaml)
    cfg = {**base, "agent": {**base["agent"], **SMALL}, "precision": "fp32", "compile": "default", "cuda_graphs": False}
    agent = make_agent_from_config(cfg, OBS_SHAPE, (A,), "cpu")
    assert all(m._compiled_call_impl is not None for m in compiled_modules(agent)) and agent.graphed_update is None
    agent = make_agent_from_config(dict(cfg, compile="none"), OBS_SHAPE, (A,), "cpu")
    assert all(m._compiled_call_impl is None for m in compiled_modules(agent))


def test_bench_cuda_graphs_choice():
    from drq.speed.cuda_graphs import cuda_graphs_wanted

    assert cuda_graphs_wanted("on", "cpu") and not cuda_graphs_wanted("off", "cuda")
    assert cuda_graphs_wanted("auto", torch.device("cuda:0")) and not cuda_graphs_wanted("auto", "cpu")
    assert cuda_graphs_wanted("auto", "auto") == torch.cuda.is_available()
    with pytest.raises(ValueError, match=r"one of \['auto', 'on', 'off'\], got 'yes'"):
        cuda_graphs_wanted("yes", "cpu")
