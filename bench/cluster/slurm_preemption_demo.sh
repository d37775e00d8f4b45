#!/usr/bin/env bash
# The two preemption paths of docs/clusters.md on a running SLURM cluster (e.g. bench/cluster/slurm_local.sh -- $0):
#   requeue: SIGUSR2 mid-run (what SLURM sends before a time limit); the trainer snapshots, submitit requeues the job,
#            the run resumes from its snapshot in the same run dir.
#   term:    SIGTERM mid-run (scancel, preemption without requeue); the trainer snapshots and exits 143; the same sweep
#            command again resumes it.
# Usage: bench/cluster/slurm_preemption_demo.sh requeue|term [SWEEP_DIR]   (PYTHON defaults to .venv/bin/python)
set -uo pipefail
cd "$(dirname "$0")/../.."
MODE=${1:-requeue}
SWEEP=${2:-/tmp/drq_slurm_$MODE}
PY=${PYTHON:-.venv/bin/python}
SIG=$([ "$MODE" = term ] && echo TERM || echo USR2)
FRAMES=$([ "$MODE" = term ] && echo 4000 || echo 6000)
export MUJOCO_GL=${MUJOCO_GL:-egl}
rm -rf "$SWEEP"
CMD=("$PY" train.py -m hydra/launcher=slurm hydra.launcher.gpus_per_node=0 hydra.launcher.cpus_per_task=1
  hydra.launcher.mem_gb=4 hydra.launcher.timeout_min=30 preset=debug task=cartpole_balance seed=1
  num_train_frames=$FRAMES save_video=false wandb.mode=disabled "hydra.sweep.dir=$SWEEP")
RUN=$SWEEP/0_cartpole_balance
last_frame() { tail -n1 "$RUN/train.csv" 2>/dev/null | cut -d, -f1; }
"${CMD[@]}" > "$SWEEP.sweep1.log" 2>&1 &
SWEEP_PID=$!
until [ "$(last_frame)" -ge 1600 ] 2>/dev/null; do sleep 1; done
JOB=$(squeue -h -o %i | head -n1)
echo "job $JOB at train.csv frame $(last_frame): scancel --signal=$SIG $JOB"
scancel --signal="$SIG" "$JOB"
if [ "$MODE" = term ]; then
  while squeue -h -o %i | grep -q .; do sleep 1; done
  sleep 5; kill "$SWEEP_PID" 2>/dev/null  # without sacct (slurm_local.sh) submitit cannot see that the job ended
  grep -h "drq:" "$SWEEP"/.submitit/*/*.err
  "${CMD[@]}" > "$SWEEP.sweep2.log" 2>&1; echo "resubmitted sweep: exit code $?"
else
  wait "$SWEEP_PID"; echo "sweep: exit code $?"
  grep -h "drq:\|Requeued" "$SWEEP"/.submitit/*/*.err "$SWEEP"/.submitit/*/*.out | sort -u
fi
grep -h "resumed from" "$SWEEP"/.submitit/*/*.out
echo "train.csv frames: $(cut -d, -f1 "$RUN/train.csv" | tail -n +2 | tr '\n' ' ')"
echo "eval.csv frames: $(cut -d, -f1 "$RUN/eval.csv" | tail -n +2 | tr '\n' ' ')"
