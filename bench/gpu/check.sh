#!/usr/bin/env bash
# One command for a GPU window: install the offline kit, unpack the GL loaders, run every GPU path (bench/gpu/check.py).
#
#   bash bench/gpu/check.sh [--out DIR] [--kit DIR]      # on the GPU machine (or your own GPU box): <= 5 min
#   bash bench/gpu/check.sh --rehearse [--out DIR]       # here, on the CPU: the same script, tiny sizes
#   bash bench/gpu/check.sh --only 'compile|both'         # a second call: only the parts whose name matches
#
# Results: DIR/check.jsonl (one JSON line per part) and DIR/check.log; DIR defaults to $OUT (the device's output
# folder), else ./gpu-check-out. Nothing here touches the network, except --rehearse's first step (building the
# device-like venv from the registry, which is what the GPU machine has preinstalled). docs/gpu.md has the details.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
REHEARSE=0
OUT_DIR="${OUT:-}"
KIT=""
ONLY=""
while [ $# -gt 0 ]; do
  case "$1" in
    --rehearse) REHEARSE=1 ;;
    --out) OUT_DIR="${2:?--out needs a folder}"; shift ;;
    --kit) KIT="${2:?--kit needs a folder}"; shift ;;
    --only) ONLY="${2:?--only needs a regex}"; shift ;;
    *) echo "check.sh: unknown argument '$1'; valid: --rehearse, --out DIR, --kit DIR, --only REGEX" >&2; exit 2 ;;
  esac
  shift
done
OUT_DIR="${OUT_DIR:-$ROOT/gpu-check-out}"
say() { echo "check.sh: $*" >&2; }
T0=$(date +%s)

if [ "$REHEARSE" = 1 ]; then
  PYV=3.11
  KIT="${KIT:-$ROOT/.devkit/py3.11}"
else
  PYV="$(python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
  KIT="${KIT:-$ROOT/.devkit/py$PYV}"
fi
if [ ! -d "$KIT/wheels" ]; then
  echo "check.sh: no kit at $KIT; build it first where pip works: bash bench/gpu/build_kit.sh $PYV" >&2
  exit 2
fi
mkdir -p "$OUT_DIR"
rm -f "$OUT_DIR/check.jsonl" "$OUT_DIR/check.log"

# ---------------------------------------------------------------------------------------------------------------------
if [ "$REHEARSE" = 1 ]; then
  # A fresh venv holding only what the GPU machine's image holds (bench/gpu/device_packages.txt), CPU torch instead of
  # the device's CUDA build; the kit goes in with --no-index, as there.
  VENV="$(mktemp -d /tmp/drq-rehearse-venv.XXXXXX)"
  say "building the device-like venv at $VENV (registry: the device's preinstalled packages only)"
  python3.11 -m venv "$VENV" || exit 1
  mapfile -t DEVICE_PKGS < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' "$ROOT/bench/gpu/device_packages.txt" | grep -v '^$')
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-compile "${DEVICE_PKGS[@]}" \
    2> >(grep -v "is ignored: it is neither" >&2) || { say "venv build failed"; exit 1; }
  PY="$VENV/bin/python"
  T_VENV=$(( $(date +%s) - T0 ))
else
  PY=python3
  T_VENV=0
  VENV=""
fi

# ---------------------------------------------------------------------------------------------------------------------
source "$ROOT/bench/gpu/kit_env.sh"
python3 - "$OUT_DIR/check.jsonl" "$REHEARSE" "$KIT" "$INSTALLED" "$GL" "$T_VENV" <<'EOF'
import json, os, sys
path, rehearse, kit, installed, gl, t_venv = sys.argv[1:]
size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(kit) for f in fs)
line = {"part": "kit", "ok": True, "rehearse": rehearse == "1", "kit": kit, "kit_mib": round(size / 2**20, 2),
        "installed_offline": installed.split(), "gl_loaders": gl, "venv_build_s": int(t_venv)}
open(path, "a").write(json.dumps(line) + "\n")
print(json.dumps(line))
EOF

ARGS=(--out "$OUT_DIR")
[ "$REHEARSE" = 1 ] && ARGS+=(--rehearse)
[ -n "$ONLY" ] && ARGS+=(--only "$ONLY")
(cd "$ROOT" && "$PY" bench/gpu/check.py "${ARGS[@]}")
RC=$?

if [ "$REHEARSE" = 1 ]; then
  # The 3.12 kit must hold the same packages as the 3.11 one just proven, each installable on CPython 3.12.
  python3 "$ROOT/bench/gpu/kit_parity.py" "$KIT" "$ROOT/.devkit/py3.12" | tee -a "$OUT_DIR/check.jsonl"
  [ "${PIPESTATUS[0]}" = 0 ] || RC=1
fi
rm -rf "$SITE" ${VENV:+"$VENV"}
echo "{\"part\": \"check.sh\", \"rc\": $RC, \"wall_s\": $(( $(date +%s) - T0 )), \"venv_build_s\": $T_VENV}"
exit $RC
