# Sourced by check.sh and learn.sh: install the kit offline and set up the environment the parts run in.
# Needs: ROOT, PY (the Python that runs the parts), KIT (.devkit/pyX.Y), REHEARSE (0 | 1).
# Sets: SITE (the --target folder), INSTALLED (the dist-infos installed), GL (what happened to the GL loaders), and
# exports PYTHONPATH (kit, then the tree: drq is used from the tree, not installed), MUJOCO_GL=egl, WANDB_MODE=disabled.
SITE="$(mktemp -d /tmp/drq-kit-site.XXXXXX)"
echo "kit_env: installing the kit offline into $SITE" >&2
"$PY" -m pip install --quiet --disable-pip-version-check --no-index --no-deps --no-compile --target "$SITE" \
  "$KIT"/wheels/*.whl 2> >(grep -v "is ignored: it is neither" >&2) || { echo "kit_env: offline kit install failed" >&2; exit 1; }
INSTALLED="$(cd "$SITE" && ls -d *.dist-info | sed 's/\.dist-info$//' | tr '\n' ' ')"

GL="skipped (rehearsal)"
if [ "$REHEARSE" = 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v dpkg >/dev/null; then
    for f in "$KIT"/debs/*.deb; do dpkg -x "$f" /; done
    ldconfig
    GL="unpacked $(ls "$KIT"/debs/*.deb | wc -l) debs"
  else
    GL="skipped (not root or no dpkg: the system's GL loaders are used)"
  fi
  # The NVIDIA EGL vendor file, where the driver mount keeps it (device README).
  for f in /usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json /usr/share/glvnd/egl_vendor.d/10_nvidia.json; do
    if [ -f "$f" ] && [ -z "${__EGL_VENDOR_LIBRARY_FILENAMES:-}" ]; then export __EGL_VENDOR_LIBRARY_FILENAMES="$f"; fi
  done
fi

export PYTHONPATH="$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export MUJOCO_GL=egl PYOPENGL_PLATFORM=egl WANDB_MODE=disabled WANDB_SILENT=true PYTHONUNBUFFERED=1
