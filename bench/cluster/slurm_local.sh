#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, from Debian's packages (needs root and apt), for trying
# `python train.py -m hydra/launcher=slurm ...` end to end (docs/clusters.md).
#
#   bench/cluster/slurm_local.sh -- CMD ARGS...   start the cluster, run CMD, stop the cluster (also on error / Ctrl-C)
#   bench/cluster/slurm_local.sh start            start it and leave it running (prints how to stop it)
#   bench/cluster/slurm_local.sh stop             stop munged, slurmctld and slurmd started by `start`
#
# One partition `debug` (the default) holding this host with all its cores and 90% of its memory; no GPUs (GRES), no
# accounting, no cgroups (proctrack/linuxproc: works in a container). Jobs may be requeued (JobRequeue=1).
# Logs and state: $SLURM_LOCAL_DIR (default /tmp/drq-slurm-local).
set -euo pipefail

STATE=${SLURM_LOCAL_DIR:-/tmp/drq-slurm-local}
CONF_DIR=/etc/slurm
HOST=$(hostname -s)

say() { echo "slurm_local: $*" >&2; }

install_packages() {
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null; then
    return
  fi
  [ "$(id -u)" = 0 ] || { say "needs root to install slurm-wlm and munge (apt-get)"; exit 2; }
  say "installing slurm-wlm and munge from Debian"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
}

write_config() {
  local cpus mem_mb
  cpus=$(nproc)
  mem_mb=$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)
  mkdir -p "$CONF_DIR" "$STATE"/{ctld,d,log}
  cat > "$CONF_DIR/slurm.conf" <<CONF
# written by bench/cluster/slurm_local.sh: a one-node cluster on $HOST
ClusterName=drqlocal
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
JobRequeue=1
KillWait=30
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
  say "slurm.conf: node $HOST, $cpus CPUs, ${mem_mb} MB, partition debug"
}

start_munge() {
  if [ ! -s /etc/munge/munge.key ]; then
    mkdir -p /etc/munge
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1k count=1 status=none
  fi
  mkdir -p /run/munge /var/lib/munge /var/log/munge
  chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge
  chmod 0700 /etc/munge; chmod 0400 /etc/munge/munge.key; chmod 0755 /run/munge
  if ! pgrep -x munged >/dev/null; then
    runuser -u munge -- /usr/sbin/munged
    touch "$STATE/munged.ours"  # stop only a munged this script started
  fi
  for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && return; sleep 0.2; done
  say "munged did not come up"; exit 1
}

start_cluster() {
  install_packages
  write_config
  start_munge
  slurmctld -c -f "$CONF_DIR/slurm.conf"
  slurmd -f "$CONF_DIR/slurm.conf"
  for _ in $(seq 150); do
    state=$(sinfo -h -o %T 2>/dev/null | head -n1 || true)
    if [ "$state" = idle ]; then
      say "up: $(sinfo -h -o '%P %D %c %m %T' | head -n1)"
      return
    fi
    sleep 0.2
  done
  say "the node did not become idle: $(sinfo -h -o %T 2>&1 | head -n1); see $STATE/log/"
  stop_cluster
  exit 1
}

stop_cluster() {
  local pids=()
  for pidfile in "$STATE/slurmd.pid" "$STATE/slurmctld.pid"; do
    if [ -s "$pidfile" ]; then pids+=("$(cat "$pidfile")"); fi
  done
  if [ -e "$STATE/munged.ours" ] && [ -s /run/munge/munged.pid ]; then
    pids+=("$(cat /run/munge/munged.pid)")
    rm -f "$STATE/munged.ours"
  fi
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for _ in $(seq 300); do  # daemons on a busy machine take a few seconds to exit
    alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  say "stopped"
}

case "${1:-}" in
  start) start_cluster; say "stop it with: $0 stop" ;;
  stop) stop_cluster ;;
  --)
    shift
    [ $# -gt 0 ] || { say "usage: $0 -- CMD ARGS..."; exit 2; }
    start_cluster
    trap stop_cluster EXIT
    "$@"
    ;;
  *) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
