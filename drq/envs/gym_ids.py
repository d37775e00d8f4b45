"""Gymnasium environment names: a registered id (``InvertedPendulum-v5``) or an entry point of the user's own
(``my_pkg.my_module:MyEnv``), resolved to what builds the environment, with one-line errors for names that do not.

``gym.id`` is either

- a Gymnasium id, ``[namespace/]Name[-vN]`` (``gymnasium.envs.registry``; ``module:Id`` first imports ``module``, as
  ``gymnasium.make`` does, for packages that register their ids on import), built by ``gymnasium.make``; or
- ``module.path:Name``, where ``Name`` is an attribute of the module (a ``gymnasium.Env`` subclass or a function
  returning an env), built by calling it with ``gym.kwargs``. The module is looked up on ``sys.path`` and in the working
  directory (as ``python -m`` does), so ``gym.id=my_pkg.my_module:MyEnv`` works from the project holding ``my_pkg``.

Errors (:class:`GymIdError`, one line each): an unknown id (the closest registered ids), a module that does not import
(the missing module named), a missing attribute (the module's closest names), a registered env whose package extra is
not installed (the ``pip install`` line). MuJoCo's OpenGL backend is chosen (:func:`drq.envs.rendering.setup_rendering`)
before any env module is imported: ``import mujoco`` binds the backend that ``MUJOCO_GL`` names at that moment.
"""

from __future__ import annotations

import difflib
import importlib
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable

ENTRY_POINT_SEPARATOR = ":"

# gymnasium's own env groups and the extra that installs what they need (pyproject of gymnasium 1.x)
_EXTRAS = {"box2d": "box2d", "mujoco": "mujoco", "classic_control": "classic-control", "toy_text": "toy-text"}


class GymIdError(ValueError):
    """``gym.id`` names no environment that can be built here; ``str(error)`` is one line."""


@dataclass(frozen=True)
class GymSource:
    """What builds the environment a ``gym.id`` names.

    ``registered``: the Gymnasium id to pass to ``gymnasium.make`` (None for a user entry point); ``creator``: the class
    or function that builds it (a registered id's entry point, loaded); ``entry_point``: ``module:attr`` of the
    creator, for run.json. (The registered time limit: :func:`time_limit_frames`.)"""

    registered: str | None
    creator: Callable[..., Any]
    entry_point: str

    @property
    def uses_mujoco(self) -> bool:
        """Whether the env is one of gymnasium's MuJoCo envs (``MujocoEnv``: width/height at construction, a model
        and data a second renderer can draw)."""
        try:
            from gymnasium.envs.mujoco.mujoco_env import MujocoEnv
        except ImportError:  # gymnasium without its mujoco extra
            return False
        return isinstance(self.creator, type) and issubclass(self.creator, MujocoEnv)


def is_entry_point(name: str) -> bool:
    """``module.path:Name`` where ``Name`` is a Python identifier (a class or function), not a registered id."""
    module, sep, attr = name.rpartition(ENTRY_POINT_SEPARATOR)
    return bool(sep and module and attr.isidentifier())


def _prepare_gl() -> None:
    """Pick MuJoCo's GL backend before any env module imports mujoco (a pure-Python env needs none: no error)."""
    from drq.envs import rendering

    try:
        rendering.setup_rendering()
    except rendering.RenderingUnavailable:
        pass  # an env that renders with MuJoCo says so when it first renders


def _import(module: str, name: str) -> Any:
    """``importlib.import_module(module)``, the working directory searched too; :class:`GymIdError` when it fails."""
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.append(os.getcwd())  # after the installed packages: a local folder never shadows one
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        missing = error.name or str(error)
        if missing == module or module.startswith(f"{missing}."):
            raise GymIdError(f"gym.id={name}: no module named '{missing}' (looked up on sys.path and in the working "
                             f"directory {os.getcwd()})") from None
        raise GymIdError(f"gym.id={name}: importing {module} failed: it needs the module '{missing}', which is not "
                         f"installed (pip install {missing.split('.')[0]}?)") from None
    except Exception as error:  # noqa: BLE001 -- a user module may raise anything on import
        raise GymIdError(f"gym.id={name}: importing {module} failed: {type(error).__name__}: "
                         f"{_first_line(error)}") from None


def _first_line(error: BaseException) -> str:
    return (str(error).strip() or type(error).__name__).splitlines()[0]


def _missing_extra(name: str, entry_point: str, error: BaseException) -> GymIdError:
    """The one line for a registered env whose package (a gymnasium extra, or a third-party dependency) is missing."""
    group = entry_point.split(":")[0].split(".")
    extra = _EXTRAS.get(group[2]) if group[:2] == ["gymnasium", "envs"] and len(group) > 2 else None
    pip = f'pip install "gymnasium[{extra}]"' if extra else f"pip install {getattr(error, 'name', '') or '<package>'}"
    return GymIdError(f"gym.id={name}: needs a package that is not installed ({_first_line(error)}); install it with: "
                      f"{pip}")


def registered_ids() -> list[str]:
    """Every id in gymnasium's registry (after the imports a ``module:Id`` name asked for)."""
    from gymnasium.envs.registration import registry

    return sorted(registry)


def _unknown_id(name: str) -> GymIdError:
    ids = registered_ids()
    near = difflib.get_close_matches(name, ids, n=5, cutoff=0.6) or [
        i for i in ids if name.lower().split("-v")[0] in i.lower()][:5]
    hint = f"closest registered ids: {', '.join(near)}" if near else f"{len(ids)} ids are registered (e.g. " \
        "InvertedPendulum-v5, Reacher-v5, HalfCheetah-v5)"
    return GymIdError(f"gym.id={name}: not a registered Gymnasium id; {hint}")


def _entry_point_text(creator: Any) -> str:
    if isinstance(creator, str):
        return creator
    return f"{getattr(creator, '__module__', '?')}:{getattr(creator, '__qualname__', repr(creator))}"


def resolve(name: str) -> GymSource:
    """What builds the env ``name`` (see the module docstring); :class:`GymIdError` (one line) when nothing does."""
    if not isinstance(name, str) or not name:
        raise GymIdError(f"gym.id={name!r}: a registered Gymnasium id or an entry point module.path:ClassName")
    _prepare_gl()
    from gymnasium.envs.registration import load_env_creator, registry

    if is_entry_point(name):
        module_name, _, attr = name.rpartition(ENTRY_POINT_SEPARATOR)
        module = _import(module_name, name)
        if hasattr(module, attr):
            creator = getattr(module, attr)
            if not callable(creator):
                raise GymIdError(f"gym.id={name}: {attr} in {module_name} is a {type(creator).__name__}, not a "
                                 "class or function that builds an env")
            return GymSource(None, creator, name)
        if name in registry or attr in registry:  # the module registered an id of that name on import
            registered = name if name in registry else attr
        else:
            public = [n for n in dir(module) if not n.startswith("_")]
            near = difflib.get_close_matches(attr, public, n=3, cutoff=0.5)
            raise GymIdError(f"gym.id={name}: module {module_name} has no attribute {attr!r}"
                             + (f"; closest: {', '.join(near)}" if near else ""))
    else:
        registered = name
        module_name, sep, env_id = name.partition(ENTRY_POINT_SEPARATOR)
        if sep:  # gymnasium's own 'module:Id' form: the module registers the id when imported
            _import(module_name, name)
            registered = env_id
        if registered not in registry:
            raise _unknown_id(registered)
    spec = registry[registered]
    try:
        creator = load_env_creator(spec.entry_point) if isinstance(spec.entry_point, str) else spec.entry_point
    except Exception as error:  # noqa: BLE001 -- DependencyNotInstalled, ModuleNotFoundError, ...
        raise _missing_extra(name, _entry_point_text(spec.entry_point), error) from None
    return GymSource(registered, creator, _entry_point_text(spec.entry_point))


def problem(name: str) -> str | None:
    """The one line that says why ``name`` names no env here, or None (the config schema's check of ``gym.id``)."""
    try:
        resolve(name)
    except GymIdError as error:
        return str(error).split(": ", 1)[1] if str(error).startswith(f"gym.id={name}: ") else str(error)
    return None


def time_limit_frames(name: str, kwargs: dict[str, Any] | None = None) -> int | None:
    """The env's own time limit in frames (gym steps), read from the registry without building or importing the env:
    ``kwargs['max_episode_steps']`` when given, else the registered id's ``max_episode_steps``; None when unknown (an
    entry point, an id not registered here)."""
    given = (kwargs or {}).get("max_episode_steps")
    if isinstance(given, int) and not isinstance(given, bool) and given > 0:
        return given
    if is_entry_point(name):
        return None
    try:
        from gymnasium.envs.registration import registry
    except ImportError:
        return None
    spec = registry.get(name.partition(ENTRY_POINT_SEPARATOR)[2] or name)
    return spec.max_episode_steps if spec is not None else None


def record(name: str) -> dict[str, Any]:
    """What run.json says of the env ``name``: ``{"id", "entry_point", "registered", "max_episode_steps"}``, read
    from gymnasium's registry without importing the env's module (an entry point is its own ``entry_point``)."""
    spec = None
    if not is_entry_point(name):
        from gymnasium.envs.registration import registry

        spec = registry.get(name.partition(ENTRY_POINT_SEPARATOR)[2] or name)
    return {"id": name, "entry_point": _entry_point_text(spec.entry_point) if spec else name,
            "registered": spec is not None, "max_episode_steps": spec.max_episode_steps if spec else None}
