"""Updates per second of our agent's update vs a plain eager fp32 update of the same networks, in one run.

    python bench/update.py --agent drqv2|sac [--precision auto|fp32|bf16] [--batch-size 256] [--device auto]
                           [--compile none|default|max-autotune] [--cuda-graphs auto|on|off] [--no-peak]
                           [--target-encoder true|false|both]   (SAC; both: also ours without it, same run)

Ours: ``drq.agents.make_agent(...).update(batch, step)`` (uint8 integer-crop augmentation, ``precision=auto``: bf16
autocast where the hardware has it natively, else fp32 (``drq.speed.precision``); channels_last, batched augmentations,
fused Adam, metrics left on the device; on CUDA also the whole update replayed as one CUDA graph, and optionally
torch.compile'd networks).
Baseline: the same algorithm at the same layer sizes, written the way DrQ-v2 / DrQ write it: the plain reference update
of ``tests/reference/updates.py`` (the one tests/test_transcription.py holds ours against): float conversion, then
replicate pad + crop of each float frame, NCHW, fp32, no autocast, one encoder pass per augmentation, default Adam,
the per-parameter soft-update loop, and ``.item()`` on every metric.

Frames are 84x84 with a 3-frame stack (9 channels); the batch is random uint8 frames already on the device (as the
replay returns it). The last line printed is one JSON object: agent, updates_per_s, baseline_updates_per_s, ratio,
device, precision (as asked) and precision_resolved / precision_reason, plus compile, cuda_graphs, batch_size, iters,
torch_threads, machine (``drq.speed.hardware.describe``: CPU model, cores, torch capability, native bf16, GPU). Warm-up
updates (untimed) include compilation and graph capture.

Ceiling: ``update_gflop`` is the update's FLOPs counted once from the shapes (``update_flops``: 2 FLOPs per
multiply-add of every conv / linear layer; a backward pass that computes weight and input gradients counts 2x its
forward, one that computes only one of them 1x; SAC's actor step, taken every other update, counts half). The bench
then measures this machine's matmul and conv FLOP/s in the same process (``bench/peak.py``'s ``measure_peak``: fp32,
and bf16 when ours runs bf16 on hardware that has it natively; emulated bf16 is measured against the fp32 peak) and
prints ``achieved_gflops`` (ours and the baseline's) and their fractions of each peak.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from typing import Callable, NamedTuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Before torch: OMP_WAIT_POLICY=PASSIVE, THP_MEM_ALLOC_ENABLE=1 (huge pages for large tensors) and glibc keeping freed
# memory, for ours and the baseline alike, since both run in this process -- the settings `python train.py` trains with.
from drq.machine import process_tuning  # noqa: E402

process_tuning.tune_process()
import torch  # noqa: E402

from drq.agents import make_agent  # noqa: E402
from drq.speed.compiling import COMPILE_MODES  # noqa: E402
from drq.speed.cuda_graphs import GRAPH_CHOICES, cuda_graphs_wanted  # noqa: E402
from drq.speed.hardware import describe  # noqa: E402
from drq.agents.networks import conv_output_hw  # noqa: E402
from drq.speed.precision import PRECISIONS, resolve_precision  # noqa: E402
from tests.reference.updates import DrQReference, DrQV2Reference  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peak import measure_peak  # noqa: E402

OBS_SHAPE = (9, 84, 84)


class Batch(NamedTuple):
    obs: torch.Tensor
    action: torch.Tensor
    reward: torch.Tensor
    discount: torch.Tensor
    next_obs: torch.Tensor


def random_batch(batch_size: int, action_dim: int, device: torch.device) -> Batch:
    g = torch.Generator().manual_seed(0)
    obs = torch.randint(0, 256, (batch_size, *OBS_SHAPE), dtype=torch.uint8, generator=g)
    next_obs = torch.randint(0, 256, (batch_size, *OBS_SHAPE), dtype=torch.uint8, generator=g)
    action = torch.rand(batch_size, action_dim, generator=g) * 2 - 1
    reward = torch.rand(batch_size, 1, generator=g)
    discount = torch.full((batch_size, 1), 0.99 ** 3)
    return Batch(*(t.to(device) for t in (obs, action, reward, discount, next_obs)))


def baseline(agent: str, action_dim: int, device: torch.device, **sac: bool) -> Callable[[Batch, int], dict]:
    """The papers' update as their code writes it (``tests/reference/updates.py``: the one plain reference the
    transcription tests hold ours against), at the published sizes, with ``.item()`` on every metric as they log."""
    if agent == "drqv2":
        ref = DrQV2Reference(OBS_SHAPE, action_dim, lr=1e-4, std=0.5, device=device)
    else:
        ref = DrQReference(OBS_SHAPE, action_dim, lr=1e-3, device=device, **sac)
    return lambda batch, step: {k: v.item() for k, v in ref.update(batch, step).items()}


# --------------------------------------------------------------------------------------------------------------------
def update_flops(agent: str, batch_size: int, action_dim: int, obs_shape: tuple[int, int, int] = OBS_SHAPE,
                 feature_dim: int = 50, hidden_dim: int = 1024, num_augs: int = 2, target_encoder: bool = False) -> float:
    """FLOPs of one update (2 per multiply-add), counted from the layer shapes of ``drq.agents.networks``.

    Per module: forward ``f``; forward + backward ``3 f`` when it computes weight and input gradients, ``2 f`` when
    only one of them (conv1: no input gradient; the actor's trunk: detached features; the critic in the actor loss:
    input gradients only). DrQ-v2: ``obs`` encoded with gradient, ``next_obs`` without; target actor + target critic
    on ``next``; critic on ``obs`` with backward into the encoder; actor step. SAC (``num_augs`` = K = M = 2): the
    encoder and critic at ``M B``, the targets at ``K B``, the actor step (every other update) counted half; with
    ``target_encoder`` (DrQ's layout) also the target encoder's forward pass over the ``K B`` next observations and
    the actor step's re-encoding of ``B`` observations (forward only, every other update). Element-
    wise work (ReLU, LayerNorm, Adam, the crop) is not counted: it is < 1% of the multiply-adds."""
    c, h, w = obs_shape
    h1, w1 = (h - 3) // 2 + 1, (w - 3) // 2 + 1
    conv1 = h1 * w1 * 32 * c * 9  # per sample
    convs = sum((h1 - 2 * i) * (w1 - 2 * i) * 32 * 32 * 9 for i in (1, 2, 3))
    oh, ow = conv_output_hw(h, w)
    repr_dim = 32 * oh * ow
    trunk = repr_dim * feature_dim
    q = (feature_dim + action_dim) * hidden_dim + hidden_dim * hidden_dim + hidden_dim  # one Q head
    out = action_dim if agent == "drqv2" else 2 * action_dim
    pi = feature_dim * hidden_dim + hidden_dim * hidden_dim + hidden_dim * out
    critic, actor = trunk + 2 * q, trunk + pi
    actor_step = (2 * trunk + 3 * pi) + (critic + 2 * q)  # actor fwd+bwd; critic fwd + input-grad backward
    if agent == "drqv2":
        b_obs = b_next = batch_size
        actor_share = 1.0
    else:
        b_obs = b_next = num_augs * batch_size
        actor_share = 0.5
    macs = (b_obs * (2 * conv1 + 3 * convs)  # encoder on obs, forward + backward (no input gradient for conv1)
            + b_next * (conv1 + convs)  # encoder on next_obs, forward only
            + b_next * (actor + critic)  # target: actor and target critic on next
            + b_obs * 3 * critic  # critic forward + backward (into the features)
            + actor_share * batch_size * actor_step)
    if agent == "sac" and target_encoder:
        macs += (b_next + actor_share * batch_size) * (conv1 + convs)
    return 2.0 * macs


def time_interleaved(updates: dict[str, Callable[[Batch, int], object]], batch: Batch, warmup: int, iters: int,
                     device: torch.device, rounds: int = 5) -> dict[str, float]:
    """Updates per second of each update function: ``warmup`` untimed updates each, then ``iters`` timed ones each,
    interleaved in ``rounds`` chunks so that a change in machine load hits both sides alike."""
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for update in updates.values():
        for step in range(warmup):
            update(batch, step)
    sync()
    elapsed = dict.fromkeys(updates, 0.0)
    done = dict.fromkeys(updates, 0)
    chunk = max(1, math.ceil(iters / rounds))
    while min(done.values()) < iters:
        for name, update in updates.items():
            n = min(chunk, iters - done[name])
            start = time.perf_counter()
            for i in range(n):
                update(batch, warmup + done[name] + i)
            sync()
            elapsed[name] += time.perf_counter() - start
            done[name] += n
    return {name: done[name] / elapsed[name] for name in updates}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agent", choices=["drqv2", "sac"], default="drqv2")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="our agent's precision (default auto: bf16 where the hardware has it natively, else fp32)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--action-dim", type=int, default=6, help="A (6 = walker)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--iters", type=int, default=10, help="timed updates for each side (even: SAC's cadences)")
    parser.add_argument("--rounds", type=int, default=5, help="ours and the baseline alternate in this many chunks")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch intra-op threads (CPU)")
    parser.add_argument("--compile", choices=COMPILE_MODES, default="none",
                        help="torch.compile our agent's networks (drq.speed.compiling)")
    parser.add_argument("--target-encoder", choices=["true", "false", "both"], default="true",
                        help="SAC: agent.target_encoder for ours and the baseline; both: also time ours without it "
                             "in the same run (updates_per_s_no_target_encoder)")
    parser.add_argument("--cuda-graphs", choices=GRAPH_CHOICES, default="auto",
                        help="replay our update as CUDA graphs (auto: on when the device is CUDA)")
    parser.add_argument("--no-peak", action="store_true", help="skip measuring the peak FLOP/s (saves ~5-20 s)")
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    for name in ("batch_size", "iters", "rounds", "action_dim"):
        if getattr(args, name) < 1:
            flag = "--" + name.replace("_", "-")
            print(f"bench/update.py: {flag} must be >= 1, got {getattr(args, name)}", file=sys.stderr)
            sys.exit(2)

    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    torch.set_num_threads(max(1, args.threads))
    torch.manual_seed(0)
    batch = random_batch(args.batch_size, args.action_dim, device)

    graphs = cuda_graphs_wanted(args.cuda_graphs, device)
    precision, reason = resolve_precision(args.precision, device)
    machine = describe(device)
    print(f"precision: {precision} ({reason}); machine: {json.dumps(machine)}", file=sys.stderr)
    sac = {"target_encoder": args.target_encoder != "false"} if args.agent == "sac" else {}
    agent = make_agent(args.agent, OBS_SHAPE, (args.action_dim,), device, precision, compile=args.compile,
                       cuda_graphs=graphs, **sac)
    warmup = max(args.warmup, 10) if graphs else args.warmup  # each branch: 3 eager updates, then the capture
    updates = {"ours": agent.update, "baseline": baseline(args.agent, args.action_dim, device, **sac)}
    if args.agent == "sac" and args.target_encoder == "both":
        updates["ours_no_target_encoder"] = make_agent("sac", OBS_SHAPE, (args.action_dim,), device, precision,
                                                       compile=args.compile, cuda_graphs=graphs,
                                                       target_encoder=False).update
    rates = time_interleaved(updates, batch, warmup, args.iters, device, args.rounds)
    ours, base = rates["ours"], rates["baseline"]
    flops = update_flops(args.agent, args.batch_size, args.action_dim,
                         target_encoder=args.agent == "sac" and args.target_encoder != "false")
    achieved, base_achieved = ours * flops / 1e9, base * flops / 1e9
    flop_report = {"update_gflop": round(flops / 1e9, 1), "achieved_gflops": round(achieved, 1),
                   "baseline_achieved_gflops": round(base_achieved, 1)}
    if not args.no_peak:
        # The baseline runs fp32: its fractions are of the fp32 peak. Ours are of the peak of the precision it runs in
        # where that is native; emulated bf16 is measured against the fp32 peak, the machine's real ceiling.
        fp32_peak = measure_peak(device, torch.float32)
        ours_peak = measure_peak(device, torch.bfloat16) if precision == "bf16" and machine["native_bf16"] \
            else fp32_peak
        flop_report["peak_precision"] = "bf16" if ours_peak is not fp32_peak else "fp32"
        for kind in ("matmul", "conv"):
            flop_report[f"peak_{kind}_gflops"] = round(ours_peak[kind], 1)
            flop_report[f"fraction_of_{kind}_peak"] = round(achieved / ours_peak[kind], 3)
            flop_report[f"baseline_fraction_of_fp32_{kind}_peak"] = round(base_achieved / fp32_peak[kind], 3)

    result = {"agent": args.agent, "updates_per_s": round(ours, 3), "baseline_updates_per_s": round(base, 3),
              "ratio": round(ours / base, 2), "device": str(device) if device.type != "cuda"
              else f"cuda ({torch.cuda.get_device_name(device)})", "precision": args.precision,
              "precision_resolved": precision, "precision_reason": reason, **flop_report,
              "compile": args.compile, "cuda_graphs": graphs, "batch_size": args.batch_size, "iters": args.iters,
              "torch_threads": torch.get_num_threads(),
              "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
              **({"target_encoder": args.target_encoder} if args.agent == "sac" else {}),
              **({"updates_per_s_no_target_encoder": round(rates["ours_no_target_encoder"], 3),
                  "target_encoder_cost": round(rates["ours_no_target_encoder"] / ours - 1, 3)}
                 if "ours_no_target_encoder" in rates else {}),
              "thp_mem_alloc": os.environ.get("THP_MEM_ALLOC_ENABLE"), "malloc_tuned": process_tuning.malloc_tuned(),
              "load_avg": [round(v, 2) for v in os.getloadavg()], "machine": machine}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
