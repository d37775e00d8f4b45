#!/usr/bin/env bash
# Optional, for what is left of a GPU window: DrQ-v2 on walker_walk at its published settings for a fixed wall-clock
# budget, then eval.csv + the health PNG + one JSON line to the output folder.
#
#   bash bench/gpu/learn.sh [--out DIR] [--minutes 5] [--kit DIR] [override ...]     # minutes <= 6
#   bash bench/gpu/learn.sh --dry-run [override ...]    # the commands it would run, as one JSON line; runs nothing
#
# Runs `python3 train.py task=walker_walk agent=drqv2 device=cuda precision=bf16 cuda_graphs=true` (the easy preset:
# DrQ-v2's published walker settings -- action repeat 2, frame stack 3, nstep 1, batch 512, lr 1e-4, 4000 seed frames,
# 10 eval episodes every 10k frames) with videos and wandb off, stopped by SIGINT when the budget is spent (the trainer
# snapshots and exits). Writes DIR/learn/eval.csv, DIR/learn/health.png, DIR/learn.log and DIR/learn.jsonl (frames
# reached, frames/s, the last and best eval return; and, where ../shared/reference/drqv2_curves/dmc_walker_walk.csv
# exists, DrQ-v2's published returns at the same frames: bench/gpu/compare_curve.py, which also runs here later).
# --dry-run needs no kit: tests/test_gpu_check.py checks what it prints (every script and flag, the run's config).
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OUT_DIR="${OUT:-$ROOT/gpu-check-out}"
MINUTES=5
KIT=""
DRY_RUN=0
OVERRIDES=()
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT_DIR="${2:?--out needs a folder}"; shift ;;
    --minutes) MINUTES="${2:?--minutes needs a number}"; shift ;;
    --kit) KIT="${2:?--kit needs a folder}"; shift ;;
    --dry-run) DRY_RUN=1 ;;
    --*) echo "learn.sh: unknown option '$1'; valid: --out DIR, --minutes M (<= 6), --kit DIR, --dry-run," \
              "hydra overrides" >&2
         exit 2 ;;
    *) OVERRIDES+=("$1") ;;
  esac
  shift
done
if ! python3 -c "import sys; m = float(sys.argv[1]); sys.exit(0 if 0 < m <= 6 else 1)" "$MINUTES" 2>/dev/null; then
  echo "learn.sh: --minutes must be a number in (0, 6], got '$MINUTES'" >&2
  exit 2
fi
PY=python3
REHEARSE=0
if [ "$DRY_RUN" = 1 ]; then RUN="/tmp/drq-learn.RUN"; else RUN="$(mktemp -d /tmp/drq-learn.XXXXXX)"; fi
REF="$ROOT/../shared/reference/drqv2_curves/dmc_walker_walk.csv"
# The three commands, each run from $ROOT: training, the health PNG, the comparison (its last two arguments come
# after training: the wall time and the trainer's exit code).
TRAIN=("$PY" train.py task=walker_walk agent=drqv2 device=cuda precision=bf16 cuda_graphs=true save_video=false
       wandb.mode=disabled "hydra.run.dir=$RUN" ${OVERRIDES[@]+"${OVERRIDES[@]}"})
HEALTH=("$PY" -m drq.analysis.health "$RUN")
COMPARE=("$PY" bench/gpu/compare_curve.py "$RUN" --reference "$REF" --wall-s)
if [ "$DRY_RUN" = 1 ]; then
  python3 -c 'import json, sys
a = sys.argv[1:]
cut = [i for i, x in enumerate(a) if x == "--next--"]
print(json.dumps({"train": a[:cut[0]], "health": a[cut[0] + 1:cut[1]],
                  "compare_curve": a[cut[1] + 1:] + ["0", "--train-rc", "0"]}))' \
    "${TRAIN[@]}" --next-- "${HEALTH[@]}" --next-- "${COMPARE[@]}"
  exit 0
fi
PYV="$($PY -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
KIT="${KIT:-$ROOT/.devkit/py$PYV}"
if [ ! -d "$KIT/wheels" ]; then
  echo "learn.sh: no kit at $KIT; build it first where pip works: bash bench/gpu/build_kit.sh $PYV" >&2
  exit 2
fi
source "$ROOT/bench/gpu/kit_env.sh"
mkdir -p "$OUT_DIR/learn"
SECONDS_BUDGET="$(python3 -c "print(int(float('$MINUTES') * 60))")"
T0=$(date +%s)
(cd "$ROOT" && timeout -s INT -k 30 "$SECONDS_BUDGET" "${TRAIN[@]}") > "$OUT_DIR/learn.log" 2>&1
RC=$?
WALL=$(( $(date +%s) - T0 ))
cp "$RUN/eval.csv" "$OUT_DIR/learn/eval.csv" 2>/dev/null
(cd "$ROOT" && "${HEALTH[@]}" >> "$OUT_DIR/learn.log" 2>&1) && cp "$RUN/health.png" "$OUT_DIR/learn/health.png"
(cd "$ROOT" && "${COMPARE[@]}" "$WALL" --train-rc "$RC") | tee "$OUT_DIR/learn.jsonl"
rm -rf "$SITE"
