"""precision=auto: the choice on both kinds of CPU (the capability queries mocked, not the math), the reasons, the
emulated-bf16 warning, and where the choice reaches (make_agent, config checks, drq.speed.hardware)."""

from __future__ import annotations

import pytest
import torch

from drq.speed import precision as P
from drq.agents import make_agent
from drq.speed.hardware import describe

OBS_SHAPE = (9, 16, 16)


def fake_cpu(monkeypatch, *, avx512_bf16: bool = False, amx: bool = False, capability: str = "AVX2",
             machine: str = "x86_64", mkldnn_bf16: bool = False) -> None:
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    monkeypatch.setattr(P.platform, "machine", lambda: machine)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: mkldnn_bf16)


def test_avx2_cpu_gets_fp32(monkeypatch):
    fake_cpu(monkeypatch)
    assert P.native_bf16("cpu") == (False, "CPU without AVX-512 BF16 or AMX (torch capability AVX2)")
    precision, reason = P.resolve_precision("auto", "cpu")
    assert precision == "fp32" and "emulated" in reason and "AVX2" in reason


def test_avx512_without_bf16_gets_fp32(monkeypatch):
    # torch says AVX512 for AVX-512 CPUs with and without BF16: the capability string alone must not decide
    fake_cpu(monkeypatch, capability="AVX512", mkldnn_bf16=True)
    assert P.resolve_precision("auto", "cpu")[0] == "fp32"


@pytest.mark.parametrize("flags, words", [(dict(avx512_bf16=True), "AVX-512 BF16"), (dict(amx=True), "AMX"),
                                          (dict(machine="aarch64", mkldnn_bf16=True, capability="SVE256"), "Arm")])
def test_native_bf16_cpu_gets_bf16(monkeypatch, flags, words):
    fake_cpu(monkeypatch, **{"capability": "AVX512", **flags})
    precision, reason = P.resolve_precision("auto", "cpu")
    assert precision == "bf16" and words in reason and "native" in reason


def test_cuda_capability_threshold(monkeypatch):
    for cap, expected in (((7, 5), "fp32"), ((8, 0), "bf16"), ((9, 0), "bf16")):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None, cap=cap: cap)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Fake GPU")
        precision, reason = P.resolve_precision("auto", "cuda")
        assert precision == expected, (cap, reason)
        assert f"compute capability {cap[0]}.{cap[1]}" in reason


def test_explicit_choices_are_kept(monkeypatch):
    fake_cpu(monkeypatch)
    assert P.resolve_precision("fp32", "cpu") == ("fp32", "asked for")
    precision, reason = P.resolve_precision("bf16", "cpu")
    assert precision == "bf16" and "EMULATED" in reason
    fake_cpu(monkeypatch, avx512_bf16=True, capability="AVX512")
    assert P.resolve_precision("bf16", "cpu")[0] == "bf16"
    with pytest.raises(ValueError, match=r"precision must be one of auto, fp32, bf16; got 'fp16'"):
        P.resolve_precision("fp16", "cpu")


def test_forced_bf16_on_an_emulating_cpu_warns_once_with_the_measured_cost(monkeypatch):
    fake_cpu(monkeypatch)
    calls = []
    monkeypatch.setattr(P, "measure_bf16_cost", lambda device: calls.append(device) or 11.5)
    line = P.emulated_bf16_warning("bf16", "cpu")
    assert line.startswith("warning: precision=bf16") and "11.5x" in line and len(calls) == 1
    assert P.emulated_bf16_warning("auto", "cpu") is None and P.emulated_bf16_warning("fp32", "cpu") is None
    fake_cpu(monkeypatch, amx=True)
    assert P.emulated_bf16_warning("bf16", "cpu") is None and len(calls) == 1


def test_measure_bf16_cost_is_a_positive_ratio():
    assert P.measure_bf16_cost("cpu", batch=2, repeats=1) > 0


@pytest.mark.parametrize("native, expected", [(False, "fp32"), (True, "bf16")])
def test_make_agent_resolves_auto(monkeypatch, native, expected):
    fake_cpu(monkeypatch, avx512_bf16=native)
    agent = make_agent("drqv2", OBS_SHAPE, (2,), "cpu", "auto", hidden_dim=8, feature_dim=4)
    assert agent.precision == expected


@pytest.mark.parametrize("name", ["drqv2", "sac"])
@pytest.mark.parametrize("bad", ["auto", "fp16"])
def test_agents_take_a_resolved_precision_from_drq_precision(name, bad):
    """The agents accept what drq.speed.precision resolves to (no list of their own); 'auto' is make_agent's to resolve."""
    from drq.agents import AGENTS

    assert P.RESOLVED_PRECISIONS == ("fp32", "bf16")
    with pytest.raises(ValueError, match=rf"precision must be one of fp32, bf16 here .*; got '{bad}'"):
        AGENTS[name](OBS_SHAPE, (2,), "cpu", bad, hidden_dim=8, feature_dim=4)


def test_describe_names_the_machine(monkeypatch):
    fake_cpu(monkeypatch)
    info = describe("cpu")
    assert info["torch_cpu_capability"] == "AVX2" and info["native_bf16"] is False
    assert info["cores"] >= 1 and info["cpu"]
