"""This machine's ceiling: fp32 (and, where the hardware has it natively, bf16) matmul and convolution FLOP/s.

    python bench/peak.py [--device auto] [--threads N] [--repeats 5]

- matmul: ``(2048 x 2048) @ (2048 x 2048)``, 2 * 2048^3 FLOPs;
- conv: the encoder's 32 -> 32 channel 3x3 convolution, forward, batch 64 at 39x39 -> 37x37, channels_last (the
  layout our encoder runs in), 2 * MACs = 2 * 64 * 37 * 37 * 32 * 32 * 9 FLOPs.

Each is the best of ``--repeats`` timed calls after one untimed call, so it is a ceiling the update could reach, not
an average. ``bench/update.py`` measures the same (``measure_peak``) in its own process and reports the update's
achieved FLOP/s as a fraction of it. The last line printed is one JSON object: ``matmul_fp32_gflops``,
``conv_fp32_gflops`` (``*_bf16_gflops`` where native), ``device``, ``torch_threads``, ``machine`` (drq.speed.hardware).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from drq.machine.process_tuning import tune_process  # noqa: E402

tune_process()  # before torch: huge pages, passive OpenMP waiting, glibc keeping freed memory (as train.py)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from drq.speed.hardware import describe  # noqa: E402

MATMUL_N = 2048
CONV_SHAPE = (64, 32, 39, 39)  # (B, C, H, W) of the encoder's second conv's input, batch 64


def _best_seconds(fn, device: torch.device, repeats: int) -> float:
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    fn()
    sync()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - start)
    return best


def measure_peak(device: torch.device, dtype: torch.dtype = torch.float32, repeats: int = 5) -> dict[str, float]:
    """``{"matmul": GFLOP/s, "conv": GFLOP/s}`` for ``dtype`` on ``device`` (best of ``repeats``)."""
    g = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(MATMUL_N, MATMUL_N, generator=g).to(device, dtype)
    b = torch.randn(MATMUL_N, MATMUL_N, generator=g).to(device, dtype)
    mm_flops = 2 * MATMUL_N ** 3
    x = torch.randn(*CONV_SHAPE, generator=g).to(device, dtype).contiguous(memory_format=torch.channels_last)
    w = torch.randn(32, 32, 3, 3, generator=g).to(device, dtype).contiguous(memory_format=torch.channels_last)
    n, c, h, wd = CONV_SHAPE
    conv_flops = 2 * n * (h - 2) * (wd - 2) * 32 * c * 9
    with torch.no_grad():
        mm_s = _best_seconds(lambda: a @ b, device, repeats)
        conv_s = _best_seconds(lambda: F.conv2d(x, w), device, repeats)
    return {"matmul": mm_flops / mm_s / 1e9, "conv": conv_flops / conv_s / 1e9}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch intra-op threads (CPU)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    if args.repeats < 1:
        print(f"bench/peak.py: --repeats must be >= 1, got {args.repeats}", file=sys.stderr)
        sys.exit(2)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    torch.set_num_threads(max(1, args.threads))
    machine = describe(device)
    result: dict = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        if dtype == torch.bfloat16 and not machine["native_bf16"]:
            continue
        peak = measure_peak(device, dtype, args.repeats)
        result[f"matmul_{name}_gflops"] = round(peak["matmul"], 1)
        result[f"conv_{name}_gflops"] = round(peak["conv"], 1)
    result.update({"device": str(device), "torch_threads": torch.get_num_threads(), "machine": machine})
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
