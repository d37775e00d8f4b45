"""Pick a MuJoCo OpenGL backend before dm_control is imported.

MuJoCo (and dm_control) read ``MUJOCO_GL`` once, when their rendering modules are first imported, and PyOpenGL binds
its platform at the same moment; a backend that fails to load leaves the process unable to try another. So each
candidate is probed in a short subprocess (a 8x8 render of a one-sphere model) and only a backend that rendered is
written to ``os.environ['MUJOCO_GL']``. Child processes (``drq.envs.worker``) inherit the choice and skip the probe.

Order: ``MUJOCO_GL`` when the user set it (probed once, so a missing library gives our message instead of an
``AttributeError`` deep inside PyOpenGL); otherwise ``egl``, then ``osmesa``. When nothing renders,
:class:`RenderingUnavailable` says what to install.

Call :func:`setup_rendering` before ``import dm_control`` (``drq.envs.pixels`` does).
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Callable, Mapping, MutableMapping

CANDIDATE_BACKENDS: tuple[str, ...] = ("egl", "osmesa")

# Set in os.environ after a successful probe so that worker processes trust MUJOCO_GL without probing again.
_VERIFIED_ENV_VAR = "DRQ_MUJOCO_GL_VERIFIED"

INSTALL_HINTS: dict[str, str] = {
    "egl": "EGL (NVIDIA driver, or Mesa software rendering): Debian/Ubuntu `apt-get install libegl1 libgl1-mesa-dri`",
    "osmesa": "OSMesa (pure software): Debian/Ubuntu `apt-get install libosmesa6`",
    "glfw": "GLFW (needs a display): Debian/Ubuntu `apt-get install libglfw3 libgl1` and a running X server",
}

_PROBE_SCRIPT = """
import mujoco
model = mujoco.MjModel.from_xml_string('<mujoco><worldbody><geom size="0.1"/></worldbody></mujoco>')
data = mujoco.MjData(model)
renderer = mujoco.Renderer(model, 8, 8)
renderer.update_scene(data)
assert renderer.render().shape == (8, 8, 3)
renderer.close()
"""


class RenderingUnavailable(RuntimeError):
    """No MuJoCo OpenGL backend can render on this machine; the message says what to install."""


def probe_backend(backend: str, timeout_s: float = 60.0) -> tuple[bool, str]:
    """Try one tiny offscreen render with ``MUJOCO_GL=backend`` in a fresh Python process.

    Returns ``(ok, reason)``; ``reason`` is the last line of the child's error output when it failed.
    """
    env = dict(os.environ, MUJOCO_GL=backend)
    if env.get("PYOPENGL_PLATFORM") not in (None, backend):
        env.pop("PYOPENGL_PLATFORM")  # a stale platform from another backend would fail this probe for no reason
    try:
        result = subprocess.run(
            [sys.executable, "-c", _PROBE_SCRIPT], env=env, capture_output=True, text=True, timeout=timeout_s
        )
    except subprocess.TimeoutExpired:
        return False, f"test render did not finish within {timeout_s:.0f} s"
    if result.returncode == 0:
        return True, ""
    lines = [line.strip() for line in result.stderr.strip().splitlines() if line.strip()]
    return False, lines[-1] if lines else f"exit code {result.returncode}"


def _install_advice(backends: list[str]) -> str:
    hints = "\n".join(f"  - {INSTALL_HINTS.get(name, name)}" for name in dict.fromkeys([*backends, *CANDIDATE_BACKENDS]))
    return (
        f"Install one of:\n{hints}\n"
        "then pick it with `export MUJOCO_GL=egl` (or osmesa), or unset MUJOCO_GL to let drq try "
        + " then ".join(CANDIDATE_BACKENDS)
        + "."
    )


def _unavailable_message(failures: Mapping[str, str], user_choice: str | None) -> str:
    tried = "\n".join(f"  MUJOCO_GL={name}: {reason}" for name, reason in failures.items())
    head = (
        f"MUJOCO_GL={user_choice} was set but MuJoCo cannot render with it."
        if user_choice
        else "No MuJoCo OpenGL backend can render on this machine (tried " + ", ".join(failures) + ")."
    )
    return f"{head}\n{tried}\n{_install_advice(list(failures))}"


def select_backend(
    environ: Mapping[str, str] | None = None, probe: Callable[[str], tuple[bool, str]] | None = None
) -> str:
    """Return the backend to use: the user's ``MUJOCO_GL`` if it renders, else the first candidate that renders.

    Pure decision logic (no side effects); ``environ`` and ``probe`` are injectable for tests.
    Raises :class:`RenderingUnavailable` naming every backend tried, why it failed, and what to install.
    """
    environ = os.environ if environ is None else environ
    probe = probe_backend if probe is None else probe
    user_choice = environ.get("MUJOCO_GL") or None
    if user_choice is not None:
        if environ.get(_VERIFIED_ENV_VAR) == user_choice:
            return user_choice
        ok, reason = probe(user_choice)
        if ok:
            return user_choice
        raise RenderingUnavailable(_unavailable_message({user_choice: reason}, user_choice))
    failures: dict[str, str] = {}
    for backend in CANDIDATE_BACKENDS:
        ok, reason = probe(backend)
        if ok:
            return backend
        failures[backend] = reason
    raise RenderingUnavailable(_unavailable_message(failures, None))


def setup_rendering(environ: MutableMapping[str, str] | None = None) -> str:
    """Choose a backend once per process tree and export it as ``MUJOCO_GL``; returns its name.

    Must run before dm_control's rendering is imported. If dm_control already picked a backend in this process
    (imported earlier), that choice is returned unchanged, since it cannot be switched any more.
    """
    environ = os.environ if environ is None else environ
    already_loaded = sys.modules.get("dm_control._render")
    if already_loaded is not None and environ is os.environ:
        backend = getattr(already_loaded, "BACKEND", None)
        if backend is None:
            raise RenderingUnavailable(
                "dm_control was imported before drq.envs.rendering.setup_rendering() and found no OpenGL backend.\n"
                + _install_advice([])
            )
        return str(backend)
    backend = select_backend(environ)
    environ["MUJOCO_GL"] = backend
    environ[_VERIFIED_ENV_VAR] = backend
    return backend
