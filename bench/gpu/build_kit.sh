#!/usr/bin/env bash
# Build the offline kit for the GPU machine: wheels for what drq needs and the device lacks (bench/gpu/kit.txt),
# slimmed, plus the GL loader .debs for EGL on an NVIDIA card. Needs pip and apt here; the GPU machine needs nothing.
#
#   bash bench/gpu/build_kit.sh [PYTHON_VERSION]     # 3.12 (default): the device's Python; 3.11: the rehearsal's
#
# Writes .devkit/py<VERSION>/ (git-ignored): wheels/*.whl, debs/*.deb, kit.json (what it holds). The last line printed
# is one JSON object with the kit's size; the kit must stay <= 48 MiB so that it and the tree fit in the 64 MiB that
# travels to the GPU machine. docs/gpu.md explains every choice.
set -euo pipefail

PYV="${1:-3.12}"
case "$PYV" in
  3.1[0-9]) ;;
  *) echo "build_kit.sh: python version must look like 3.12 or 3.11, got '$PYV'" >&2; exit 2 ;;
esac
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
KIT="$ROOT/.devkit/py$PYV"
LIMIT_MIB=48
PIP="${PIP:-python3 -m pip}"
TAG="cp${PYV/./}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

rm -rf "$KIT"
mkdir -p "$KIT/wheels" "$KIT/debs" "$WORK/dl" "$WORK/sdist"
say() { echo "build_kit: $*" >&2; }
# pip, without the warnings about this machine's absent local find-links folders
pipq() { $PIP "$@" 2> >(grep -v "is ignored: it is neither" >&2); }

# ---------------------------------------------------------------------------------------------------------------------
# 1. Wheels for Python $PYV, manylinux x86-64 (pip matches each manylinux_2_N tag exactly: name the ones our pins use).
mapfile -t PKGS < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' "$ROOT/bench/gpu/kit.txt" | grep -v '^$')
BINARY=()
SDIST=()
for p in "${PKGS[@]}"; do
  if [[ "$p" == antlr4-python3-runtime==* ]]; then SDIST+=("$p"); else BINARY+=("$p"); fi
done
say "downloading ${#BINARY[@]} wheels for Python $PYV"
pipq download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
  --python-version "$PYV" --implementation cp --abi "$TAG" --abi abi3 --abi none \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_24_x86_64 \
  --platform manylinux_2_27_x86_64 --platform manylinux_2_28_x86_64 --platform any \
  -d "$WORK/dl" "${BINARY[@]}"
say "building pure-Python wheels from sdists: ${SDIST[*]}"
pipq download --quiet --disable-pip-version-check --no-deps --no-binary=:all: -d "$WORK/sdist" "${SDIST[@]}"
pipq wheel --quiet --disable-pip-version-check --no-deps -w "$WORK/dl" "$WORK"/sdist/*

# ---------------------------------------------------------------------------------------------------------------------
# 2. Slim the two big wheels (sizes before/after go into kit.json).
SLIM=()
for whl in "$WORK"/dl/*.whl; do
  name="$(basename "$whl")"
  case "$name" in
    mujoco-*)
      # Kept: the bindings, libmujoco, the classic (OpenGL/EGL) renderer, plugins. Dropped: the studio/imgui
      # experiments, the filament renderer and the simulate viewer (native viewers; we render offscreen), C headers,
      # test data and tests.
      SLIM+=("$(python3 "$ROOT/bench/gpu/slim_wheel.py" "$whl" "$KIT/wheels/$name" \
        'mujoco/experimental/*' 'mujoco/include/*' 'mujoco/testdata/*' 'mujoco/_render_filament*' \
        'mujoco/rendering/filament/*' 'mujoco/_simulate*' 'mujoco/*_test.py' 'mujoco/*/*_test.py' \
        'mujoco/sysid/*')")
      ;;
    dm_control-*)
      # Kept: the suite (every task but dog's assets), manipulation (reach_duplo: its arena, the Jaco arm and the
      # duplo props), composer, mjcf, the renderers. Dropped: locomotion's soccer and walker meshes/textures
      # (CMU humanoid, fruit fly, rodent, dog), the dog domain's assets, the Blender exporter, test assets and tests.
      SLIM+=("$(python3 "$ROOT/bench/gpu/slim_wheel.py" "$whl" "$KIT/wheels/$name" \
        'dm_control/locomotion/soccer/assets/*' 'dm_control/locomotion/walkers/assets/*' \
        'dm_control/locomotion/arenas/assets/*' 'dm_control/locomotion/mocap/*' \
        'dm_control/suite/dog_assets/*' 'dm_control/mujoco/testing/*' 'dm_control/mjcf/test_assets/*' \
        'dm_control/blender/*' 'dm_control/suite/all_domains.png' 'dm_control/locomotion/*.png' \
        'dm_control/*_test.py' 'dm_control/*/*_test.py' 'dm_control/*/*/*_test.py' 'dm_control/*/*/*/*_test.py')")
      ;;
    *) cp "$whl" "$KIT/wheels/" ;;
  esac
done

# Every wheel must install on CPython $PYV x86-64: a py3 / abi3 / cpXY tag, nothing else.
for whl in "$KIT"/wheels/*.whl; do
  n="$(basename "$whl" .whl)"
  tags="${n#*-*-}"
  case "$tags" in
    py3-none-*|py2.py3-none-*|"$TAG"-"$TAG"-*|cp3*-abi3-*) ;;
    *) echo "build_kit.sh: $n has tags '$tags', not installable on CPython $PYV" >&2; exit 1 ;;
  esac
done

# ---------------------------------------------------------------------------------------------------------------------
# 3. GL loader libraries (Debian amd64 .debs, unpacked on the device with dpkg -x + ldconfig by check.sh).
say "apt-get download of the GL loaders"
LISTS="$WORK/apt-lists"
mkdir -p "$LISTS/partial"
APT=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 "-oDir::State::Lists=$LISTS" -qq)
apt-get "${APT[@]}" update >/dev/null 2> >(grep -v "unsandboxed" >&2)
(cd "$KIT/debs" && apt-get "${APT[@]}" download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2 \
  2>&1 | grep -v "unsandboxed" >&2 || true)
[ "$(ls "$KIT"/debs/*.deb | wc -l)" -eq 7 ] || { echo "build_kit.sh: expected 7 GL .debs in $KIT/debs" >&2; exit 1; }

# ---------------------------------------------------------------------------------------------------------------------
# 4. What the kit holds, and its size.
python3 - "$KIT" "$PYV" "$LIMIT_MIB" "${SLIM[@]}" <<'EOF'
import json, os, sys
kit, pyv, limit = sys.argv[1], sys.argv[2], float(sys.argv[3])
slim = [json.loads(s) for s in sys.argv[4:]]
files = sorted(os.path.join(d, f) for d, _, fs in os.walk(kit) for f in fs if f != "kit.json")
size = sum(os.path.getsize(f) for f in files)
wheels = sorted(os.path.basename(f) for f in files if f.endswith(".whl"))
debs = sorted(os.path.basename(f) for f in files if f.endswith(".deb"))
info = {"python": pyv, "kit_dir": os.path.relpath(kit), "kit_mib": round(size / 2**20, 2), "limit_mib": limit,
        "wheels": wheels, "debs": debs, "slimmed": slim}
json.dump(info, open(os.path.join(kit, "kit.json"), "w"), indent=1)
print(json.dumps({k: info[k] for k in ("python", "kit_dir", "kit_mib", "limit_mib")} | {"n_wheels": len(wheels), "n_debs": len(debs)}))
if size > limit * 2**20:
    sys.exit(f"build_kit.sh: the kit is {size / 2**20:.1f} MiB, over the {limit:g} MiB limit")
EOF
