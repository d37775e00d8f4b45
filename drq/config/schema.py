"""Every configuration key, declared once: type, unit, allowed values, why; the checks; the typed run config.

The values live in ``cfgs/`` (hydra composes them); this module says what each key *is*. Each field of the frozen
dataclasses below (:class:`RunConfig`, :class:`WandbConfig`, :class:`DrQV2AgentConfig`, :class:`SACAgentConfig`) is one
key, and its :class:`Key` (in the field's metadata) holds the type, the unit, the allowed range or choices and a short
why. The same dataclasses are the typed config the trainer reads: ``load(mapping)`` checks a composed config and
returns a :class:`RunConfig`, or raises :class:`ConfigError` with one line per violation::

    eval_every_frames=-100: an integer >= 1, a multiple of action_repeat (frames; evaluate at frames 0, E, 2E, ...)

Units (the one rule behind "frames are the clock the user sees"): a key ending in ``_frames`` counts environment
frames; a key ending in ``_steps`` counts agent steps (one agent step = ``action_repeat`` frames); every other count
says its unit here (``replay_buffer_size`` and ``batch_size``: transitions, one per agent step; ``stddev_schedule``'s
duration: agent steps, as in DrQ-v2). ``tests/test_config_schema.py`` holds every key to this rule.

Besides each key's own range, :data:`RULES` relate keys (every ``*_frames`` count a multiple of ``action_repeat``, a
batch no larger than the replay, ...). ``check(cfg, machine=True)`` also asks the machine (``cuda_graphs=true`` and
``device=cuda`` need a CUDA device, ``resume=PATH`` must exist); ``train.py`` runs it before hydra starts
(:mod:`drq.config.errors`), so a bad value costs seconds, not an evaluation.

A snapshot's saved config may predate a key: :func:`from_saved` fills a missing key with its ``legacy`` value where
the schema states one (the behaviour before the key existed), else with its default from ``cfgs/config.yaml`` /
``cfgs/agent/<agent>.yaml``.

``python -m drq.config.schema --markdown > docs/configuration.md`` writes the table of every key.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

__all__ = ["ConfigError", "Key", "Rule", "RunConfig", "WandbConfig", "AgentConfig", "DrQV2AgentConfig",
           "SACAgentConfig", "AGENT_CONFIGS", "RULES", "keys", "check", "load", "as_config", "from_saved", "fill_saved",
           "defaults", "markdown", "show"]  # fmt: skip

CONFIG_DIR = Path(__file__).resolve().parents[2] / "cfgs"

FRAMES = "frames"
STEPS = "agent steps"
TRANSITIONS = "transitions"
PIXELS = "pixels"

# The choices of keys whose library module imports torch (drq.speed.precision, drq.speed.compiling) or more; tests check that
# these equal the library's own tuples, so the checker stays fast (no torch import) and cannot drift.
PRECISIONS = ("auto", "fp32", "bf16")
COMPILE_MODES = ("none", "default", "max-autotune")
WANDB_MODES = ("auto", "online", "offline", "disabled")
FAST_RENDER = ("false", "no_msaa", "no_shadows")
AGENT_NAMES = ("drqv2", "sac")
REPLAY_STORAGES = ("auto", "ram", "disk")  # auto: drq.config.footprint.storage_decision
DEFAULT_EPISODE_FRAMES = 1000  # dm_control's time limit: 1000 frames per episode (cfgs/config.yaml max_episode_frames)


class ConfigError(ValueError):
    """A bad configuration; ``str(error)`` is one line per violation, each naming the key, the value and what is
    allowed."""


class _Bad(Exception):
    """Raised by a key's test: the value is not allowed (``hint``: closest choices or the specific reason)."""

    def __init__(self, hint: str = "") -> None:
        super().__init__(hint)
        self.hint = hint


_NO_LEGACY = object()


@dataclass(frozen=True)
class Key:
    """One configuration key.

    kind: the type in words (docs' type column); allowed: what values pass, in words; test: value -> normalised
    value, raising ``_Bad`` otherwise; machine: a further test that asks this machine (the file system, CUDA), run only
    by ``check(..., machine=True)``; unit: frames, agent steps, transitions, pixels, ... ('' for none); why: what it
    does, in a phrase; legacy: the value a saved config that predates the key means (default: its cfgs/ default).
    """

    kind: str
    allowed: str
    test: Callable[[Any], Any]
    unit: str = ""
    why: str = ""
    machine: Callable[[Any], None] | None = None
    legacy: Any = _NO_LEGACY
    name: str = ""

    def line(self, value: Any, hint: str = "", allowed: str | None = None) -> str:
        """``'<key>=<value>: <allowed>[; hint] (<unit>; <why>)'``: the one line for a bad value."""
        why = "; ".join(p for p in (self.unit, self.why) if p)
        return f"{self.name}={show(value)}: {allowed or self.allowed}{'; ' + hint if hint else ''}" + (
            f" ({why})" if why else "")


def _key(**kwargs: Any) -> Any:
    """A dataclass field (required: no default; values come from cfgs/) carrying its :class:`Key`."""
    return dataclasses.field(metadata={"key": Key(**kwargs)})


def _table(cls: type) -> Any:
    """A field holding a sub-table (wandb, agent)."""
    return dataclasses.field(metadata={"table": cls})


# ------------------------------------------------------------------------------------------------ value tests
def show(value: Any) -> str:
    """A value as it would be typed on the command line (``null``, ``true``, ``[a,b]``, ``'x y'``)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(show(v) for v in value) + "]"
    if isinstance(value, str):
        return value if value and not re.search(r"[\s,=:'\"]", value) else repr(value)
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{k}:{show(v)}" for k, v in value.items()) + "}"
    return repr(value)


def closest(value: Any, choices: Iterable[Any], n: int = 3) -> str:
    """``'closest: a, b'`` for the choices nearest ``value`` (by spelling), or '' if none is near."""
    names = [str(c) for c in choices]
    near = difflib.get_close_matches(str(value), names, n=n, cutoff=0.5)
    if not near:
        near = [c for c in names if str(value).lower() in c.lower() or c.lower() in str(value).lower()][:n]
    return f"closest: {', '.join(near)}" if near else ""


def _as_int(value: Any) -> int:
    if isinstance(value, bool):
        raise _Bad()
    if isinstance(value, float) and value.is_integer():
        return int(value)  # 1e6 on the command line is a float to hydra
    if not isinstance(value, int):
        raise _Bad()
    return value


def _integer(low: int | None = None, high: int | None = None) -> Callable[[Any], int]:
    def test(value: Any) -> int:
        value = _as_int(value)
        if (low is not None and value < low) or (high is not None and value > high):
            raise _Bad()
        return value

    return test


def _int_words(low: int | None, high: int | None = None) -> str:
    if high is not None:
        return f"an integer in [{low}, {high}]"
    return f"an integer >= {low}" if low is not None else "an integer"


def _number(low: float | None = None, high: float | None = None, low_open: bool = False,
            high_open: bool = False) -> Callable[[Any], float]:  # fmt: skip
    def test(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise _Bad()
        value = float(value)
        if low is not None and (value < low or (low_open and value == low)):
            raise _Bad()
        if high is not None and (value > high or (high_open and value == high)):
            raise _Bad()
        return value

    return test


def _num_words(low: float | None, high: float | None, low_open: bool = False, high_open: bool = False) -> str:
    if low is not None and high is not None:
        return f"a number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f"a number {'>' if low_open else '>='} {low:g}"
    return "a number"


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Bad()
    return value


def _choice(choices: tuple[str, ...]) -> Callable[[Any], str]:
    def test(value: Any) -> str:
        if not isinstance(value, str) or value not in choices:
            raise _Bad(closest(value, choices) if isinstance(value, str) else "")
        return value

    return test


def _text(nullable: bool = False) -> Callable[[Any], str | None]:
    def test(value: Any) -> str | None:
        if value is None and nullable:
            return None
        if not isinstance(value, str) or not value:
            raise _Bad()
        return value

    return test


def _auto_or_int(low: int) -> Callable[[Any], int | str]:
    def test(value: Any) -> int | str:
        if value == "auto" and isinstance(value, str):
            return value
        return _integer(low)(value)

    return test


def _null_or_int(low: int) -> Callable[[Any], int | None]:
    def test(value: Any) -> int | None:
        return None if value is None else _integer(low)(value)

    return test


def _str_list(value: Any) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
        raise _Bad()
    return tuple(value)


# ----------------------------------------------------------------------------------------- keys with a meaning
def _task_name(value: Any) -> str:
    from drq.envs import tasks  # pure python: no dm_control, no GL

    if not isinstance(value, str):
        raise _Bad()
    try:
        tasks.resolve_task(value)
    except ValueError:
        raise _Bad(closest(value, tasks.TASK_NAMES)) from None
    return value


def _camera(value: Any) -> int | str | None:
    if value is None or (isinstance(value, str) and value):
        return value
    return _integer(-1)(value)


def _fast_render(value: Any) -> str | bool:
    if value is False or value is None:
        return False
    if value is True:
        return "no_msaa"  # drq.envs.pixels: true means the cheaper of the two
    return _choice(FAST_RENDER[1:])(value)


def _schedule(value: Any) -> str | float:
    from drq.agents.schedules import parse_schedule  # pure python

    try:
        schedule = parse_schedule(value)
    except ValueError:
        raise _Bad() from None
    if not schedule.min_value > 0:
        raise _Bad(f"it reaches std {schedule.min_value:g}")
    return float(value) if isinstance(value, (int, float)) else value


def _stop_signals(value: Any) -> tuple[str, ...]:
    from drq.machine import stop_signals  # signal module only

    if not isinstance(value, (list, tuple, str)):
        raise _Bad()
    try:
        return tuple(s.name for s in stop_signals.parse(value))
    except ValueError as error:
        bad = re.search(r"stop_signals: ('.*?') is not one", str(error))
        raise _Bad(f"{bad.group(1) if bad else 'an entry'} is not one") from None


def _device(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?", value):
        raise _Bad(closest(value, ("auto", "cpu", "cuda")) if isinstance(value, str) else "")
    return value


def _device_here(value: str) -> None:
    if not value.startswith("cuda"):
        return
    import torch

    if not torch.cuda.is_available():
        raise _Bad("no CUDA device is available")
    index = int(value.split(":")[1]) if ":" in value else 0
    if index >= torch.cuda.device_count():
        raise _Bad(f"this machine has {torch.cuda.device_count()} CUDA device(s)")


def _compile(value: Any) -> str:
    if value is None or value is False:
        return "none"
    if value is True:
        return "default"  # drq.speed.compiling: true means default
    return _choice(COMPILE_MODES)(value)


def _resume(value: Any) -> str:
    if value is None or value is True:
        return "auto"
    if value is False:
        return "never"
    if not isinstance(value, str) or not value:
        raise _Bad()
    return value


def _resume_here(value: str) -> None:
    if value in ("auto", "never"):
        return
    path = Path(value)
    if not (path.is_file() or (path / "snapshot.pt").is_file()):
        raise _Bad(f"{path} is neither a snapshot file nor a run dir holding snapshot.pt")


def _log_std_bounds(value: Any) -> tuple[float, float]:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise _Bad()
    low, high = (_number()(v) for v in value)
    if not low < high:
        raise _Bad()
    return (low, high)


# ------------------------------------------------------------------------------------------------- the tables
def count(unit: str, why: str, low: int = 1, high: int | None = None, allowed: str | None = None,
          **kw: Any) -> Any:  # fmt: skip
    """An integer key >= ``low`` (and <= ``high``)."""
    return _key(kind="int", allowed=allowed or _int_words(low, high), test=_integer(low, high), unit=unit, why=why,
                **kw)  # fmt: skip


def frames(why: str, low: int = 1) -> Any:
    """A count of frames: an integer >= ``low``, and a multiple of action_repeat (:data:`RULES`)."""
    return count(FRAMES, why, low, allowed=f"{_int_words(low)}, a multiple of action_repeat")


def number(why: str, low: float | None = None, high: float | None = None, low_open: bool = False,
           high_open: bool = False, unit: str = "") -> Any:  # fmt: skip
    return _key(kind="float", allowed=_num_words(low, high, low_open, high_open),
                test=_number(low, high, low_open, high_open), unit=unit, why=why)  # fmt: skip


def flag(why: str, **kw: Any) -> Any:
    return _key(kind="bool", allowed="true or false", test=_flag, why=why, **kw)


def choice(choices: tuple[str, ...], why: str) -> Any:
    return _key(kind="str", allowed=f"one of {', '.join(choices)}", test=_choice(choices), why=why)


@dataclass(frozen=True)
class WandbConfig:
    """``wandb.*``: where the run's metrics go (drq.run.sinks.WandbSink)."""

    mode: str = choice(WANDB_MODES, "auto: online with credentials, else offline; nothing waits on a login")
    project: str = _key(kind="str", allowed="a non-empty string", test=_text(), why="wandb project")
    entity: str | None = _key(kind="str | null", allowed="null or a non-empty string", test=_text(True),
                              why="wandb entity; null: your default entity")
    group: str | None = _key(kind="str | null", allowed="null or a non-empty string", test=_text(True),
                             why="wandb group")
    tags: tuple[str, ...] = _key(kind="list[str]", allowed="a list of non-empty strings, e.g. [a,b]", test=_str_list,
                                 why="wandb tags")
    name: str | None = _key(kind="str | null", allowed="null or a non-empty string", test=_text(True),
                            why="wandb run name; null: <task>_<agent>_seed<seed>")


@dataclass(frozen=True)
class AgentConfig:
    """``agent.*`` keys both agents have; the ``agent:`` block of cfgs/agent/<name>.yaml is the constructor's keyword
    arguments (``drq.agents.make_agent(name, **kwargs)``)."""

    name: str = choice(AGENT_NAMES, "the agent; the agent= group sets it")
    lr: float = number("Adam learning rate of every network", 0, low_open=True)
    feature_dim: int = count("features", "width of the trunk's output, after LayerNorm and tanh")
    hidden_dim: int = count("units", "width of the actor's and critics' hidden layers")
    critic_target_tau: float = number("soft target update: target += tau * difference", 0, 1, low_open=True)
    update_every_steps: int = count(STEPS, "one update every this many agent steps, after the seed frames")
    channels_last: bool = flag("NHWC convolutions: the same numbers, faster with oneDNN and tensor cores")

    def kwargs(self) -> dict[str, Any]:
        """The constructor keywords (everything but ``name``), lists for sequences."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items() if k != "name"}


@dataclass(frozen=True)
class DrQV2AgentConfig(AgentConfig):
    """``agent=drqv2`` (Yarats et al. 2021)."""

    num_expl_steps: int = count(STEPS, "act returns uniform random actions before this agent step", low=0)
    stddev_schedule: str | float = _key(
        kind="schedule", allowed="a number or 'linear(init,final,duration)' / 'step_linear(init,f1,d1,f2,d2)' with "
        "std > 0", test=_schedule, unit=f"duration in {STEPS}", why="exploration std; = ${stddev_schedule}")
    stddev_clip: float = number("clip of the target policy's and the actor's noise", 0, low_open=True)


@dataclass(frozen=True)
class SACAgentConfig(AgentConfig):
    """``agent=sac`` (DrQ: Kostrikov, Yarats & Fergus 2020)."""

    init_temperature: float = number("initial entropy temperature alpha", 0, low_open=True)
    log_std_bounds: tuple[float, float] = _key(kind="list[float]", allowed="[low, high] with low < high",
                                               test=_log_std_bounds, why="bounds of the actor's log std, tanh-rescaled")
    actor_update_every_steps: int = count(STEPS, "actor and alpha step every this many agent steps")
    critic_target_update_every_steps: int = count(STEPS, "soft target update every this many agent steps")
    num_target_augs: int = count("augmentations", "K: target Q averaged over K augmentations of next_obs")
    num_critic_augs: int = count("augmentations", "M: critic loss summed over M augmentations of obs")
    target_encoder: bool = flag("DrQ's layout: an EMA target encoder, the actor re-encodes; false: DrQ-v2's",
                                legacy=False)  # fmt: skip  # snapshots before this key had no target encoder


AGENT_CONFIGS: dict[str, type[AgentConfig]] = {"drqv2": DrQV2AgentConfig, "sac": SACAgentConfig}


@dataclass(frozen=True)
class RunConfig:
    """A whole run's configuration, checked and typed: what ``drq.run.trainer`` reads (it has no defaults of its own)."""

    # ---- task
    task_name: str = _key(kind="str", allowed="a DrQ-v2 task or a dm_control suite domain_task", test=_task_name,
                          why="the task= group sets it; any other suite task: task_name=point_mass_easy")
    frame_stack: int = count("frames per observation", "observation = the last k frames, oldest first")
    action_repeat: int = count("frames per agent step", "each action is repeated this many frames")
    discount: float = number("gamma per agent step", 0, 1, unit="per agent step")
    image_size: int = count(PIXELS, "H = W of the agent's observations; the conv stack needs >= 15", low=15)
    camera_id: int | str | None = _key(kind="int | str | null", allowed="null, an integer >= -1 or a camera name",
                                       test=_camera, why="null: the task's camera, 2 for quadruped, else 0")
    fast_render: str | bool = _key(kind="str | false", allowed="one of false, no_msaa, no_shadows; true = no_msaa",
                                   test=_fast_render, why="faster software rendering, slightly different pixels")
    max_episode_frames: int | None = _key(kind="int | null", allowed="null or an integer >= 1, a multiple of "
                                          "action_repeat", test=_null_or_int(1), unit=FRAMES,
                                          why="null: the task's own limit, 1000 frames")
    # ---- training
    num_train_frames: int = frames("train until this frame; the preset sets it")
    num_seed_frames: int = frames("uniform random actions and no updates before this frame", low=0)
    # ---- evaluation
    eval_every_frames: int = frames("evaluate at frames 0, E, 2E, ... and at the end")
    num_eval_episodes: int = count("episodes", "episodes per evaluation, acting with the mean action")
    eval_workers: int | str = _key(kind="int | auto", allowed="'auto' or an integer >= 1, at most num_eval_episodes",
                                   test=_auto_or_int(1), unit="processes",
                                   why="eval episodes side by side; auto: one per core, <= 8, 1 = in-process")
    save_video: bool = flag("first episode of each evaluation -> videos/eval_<frame>.mp4 and wandb")
    video_size: int = _key(kind="int", allowed="an even integer >= 16", test=lambda v: _even(v, 16), unit=PIXELS,
                           why="H = W of the evaluation videos; H.264 needs even sizes")
    # ---- replay
    replay_buffer_size: int = count(TRANSITIONS, "replay capacity, one transition per agent step")
    replay_storage: str = choice(REPLAY_STORAGES, "where the replay's frames live: ram (on device), disk (a memory-"
                                 "mapped file in the run dir, read through the page cache); auto: ram when the "
                                 "replay's final size fits in usable memory with 3 GiB to spare, else disk")
    nstep: int = count(STEPS, "n-step returns, cut at the episode's end")
    batch_size: int = count(TRANSITIONS, "transitions per update, at most replay_buffer_size")
    # ---- shared agent hyper-parameters (agent/*.yaml reads them as ${lr} etc.)
    lr: float = number("learning rate; agent.lr = ${lr}; presets and tasks set it", 0, low_open=True)
    feature_dim: int = count("features", "trunk output width; agent.feature_dim = ${feature_dim}")
    hidden_dim: int = count("units", "MLP width; agent.hidden_dim = ${hidden_dim}")
    stddev_schedule: str | float = _key(
        kind="schedule", allowed="a number or 'linear(init,final,duration)' / 'step_linear(init,f1,d1,f2,d2)' with "
        "std > 0", test=_schedule, unit=f"duration in {STEPS}",
        why="DrQ-v2's exploration std; the preset sets it; quote it for hydra: stddev_schedule='linear(1,0.1,5e5)'")
    # ---- logging
    log_every_frames: int = frames("health/ metrics: means over the window, read from the device only here")
    histogram_every_frames: int = frames("wandb histograms of per-sample log-prob and |pre-tanh|")
    wandb: WandbConfig = _table(WandbConfig)
    # ---- snapshots and resume
    save_snapshot: bool = flag("write snapshot.pt periodically, at the end and on a stop signal")
    snapshot_every_frames: int = frames("snapshot at the first episode boundary after each multiple")
    save_replay_in_snapshot: bool = flag("false: smaller snapshots; a resumed run starts with an empty replay")
    resume: str = _key(kind="str", allowed="auto, never, or a snapshot.pt / a run dir holding one", test=_resume,
                       machine=_resume_here, why="auto: continue if the run dir holds snapshot.pt")
    stop_signals: tuple[str, ...] = _key(kind="list[str]", allowed="a list of SIGINT, SIGTERM, SIGUSR1, SIGUSR2, "
                                         "SIGHUP", test=_stop_signals,
                                         why="snapshot at the next safe point, exit 128+signal; docs/clusters.md")
    # ---- hardware
    seed: int = count("", "seeds python, numpy, torch, the train env; eval episode j at frame F: (seed, F, j)", low=0,
                      high=2**31 - 1)
    device: str = _key(kind="str", allowed="auto, cpu, cuda or cuda:N", test=_device, machine=_device_here,
                       why="auto: cuda if available, else cpu")
    precision: str = choice(PRECISIONS, "autocast; auto: bf16 where the hardware has it natively, else fp32")
    compile: str = _key(kind="str", allowed="one of none, default, max-autotune; true = default, false = none",
                        test=_compile, why="torch.compile of the networks, compiled on the first update")
    cuda_graphs: bool = flag("each update replays one captured CUDA graph; CUDA only")
    async_env: bool = flag("step and render the training env in a worker process while the agent updates")
    num_threads: int | str = _key(kind="int | auto", allowed="'auto' or an integer >= 1", test=_auto_or_int(1),
                                  unit="threads",
                                  why="torch threads; auto: all cores, one fewer with async_env on more than 4")
    agent: AgentConfig = _table(AgentConfig)
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict, metadata={"extra": True})

    def to_dict(self) -> dict[str, Any]:
        """The config as plain python (lists, dicts): for the snapshot, wandb's config and ``.get``-free readers."""
        out = _plain(self)
        out.update(_plain(dict(self.extra)))
        return out


def _even(value: Any, low: int) -> int:
    value = _integer(low)(value)
    if value % 2:
        raise _Bad()
    return value


def _plain(node: Any) -> Any:
    if dataclasses.is_dataclass(node):
        return {f.name: _plain(getattr(node, f.name)) for f in dataclasses.fields(node) if not f.metadata.get("extra")}
    if isinstance(node, (list, tuple)):
        return [_plain(v) for v in node]
    if isinstance(node, Mapping):
        return {k: _plain(v) for k, v in node.items()}
    return node


def _fields(cls: type, prefix: str = "") -> list[tuple[str, dataclasses.Field]]:
    return [(prefix + f.name, f) for f in dataclasses.fields(cls) if not f.metadata.get("extra")]


def keys(agent: str | None = None) -> dict[str, Key]:
    """Every key, dotted (``'wandb.mode'``, ``'agent.lr'``) -> its :class:`Key`, in cfgs/config.yaml's order;
    ``agent``: only that agent's ``agent.*`` keys (default: both agents')."""
    return dict(_keys(agent))


@lru_cache(maxsize=None)
def _keys(agent: str | None) -> dict[str, Key]:
    out: dict[str, Key] = {}

    def walk(cls: type, prefix: str) -> None:
        for name, f in _fields(cls, prefix):
            if "table" in f.metadata:
                if f.metadata["table"] is AgentConfig:
                    for agent_name in ([agent] if agent else AGENT_NAMES):
                        walk(AGENT_CONFIGS[agent_name], name + ".")
                else:
                    walk(f.metadata["table"], name + ".")
            elif name not in out:
                out[name] = dataclasses.replace(f.metadata["key"], name=name)

    walk(RunConfig, "")
    return out


# ---------------------------------------------------------------------------------------------- cross-key rules
@dataclass(frozen=True)
class Rule:
    """A relation between keys: ``test(values) -> [(key, value, allowed, why), ...]`` for the violations; it runs
    only when every key in ``keys`` passed its own check."""

    keys: tuple[str, ...]
    words: str  # the rule in words (docs)
    test: Callable[[Mapping[str, Any]], list[tuple[str, Any, str, str]]]


FRAME_COUNTS = ("num_train_frames", "num_seed_frames", "eval_every_frames", "log_every_frames",
                "histogram_every_frames", "snapshot_every_frames", "max_episode_frames")  # fmt: skip


def _multiples(v: Mapping[str, Any]) -> list[tuple[str, Any, str, str]]:
    repeat, out = v["action_repeat"], []
    for key in FRAME_COUNTS:
        value = v[key]
        if value is None or value % repeat == 0:
            continue
        lower, upper = value - value % repeat, value - value % repeat + repeat
        near = " or ".join(str(n) for n in (lower, upper) if n > 0 or (key == "num_seed_frames" and n == 0))
        out.append((key, value, f"a multiple of action_repeat={repeat}, e.g. {near}",
                    "frames; the loop advances action_repeat frames per agent step, so other values drift"))
    return out


def _batch_fits(v: Mapping[str, Any]) -> list[tuple[str, Any, str, str]]:
    if v["batch_size"] <= v["replay_buffer_size"]:
        return []
    return [("batch_size", v["batch_size"], f"at most replay_buffer_size={v['replay_buffer_size']}",
             "transitions; a batch larger than the replay can ever hold repeats transitions in every batch")]


def _eval_workers(v: Mapping[str, Any]) -> list[tuple[str, Any, str, str]]:
    workers, episodes = v["eval_workers"], v["num_eval_episodes"]
    if workers == "auto" or workers <= episodes:
        return []
    return [("eval_workers", workers, f"'auto' or at most num_eval_episodes={episodes}",
             "processes; more workers than episodes would start environments that never play")]


def _nstep(v: Mapping[str, Any]) -> list[tuple[str, Any, str, str]]:
    frames_per_episode = v["max_episode_frames"] or DEFAULT_EPISODE_FRAMES
    steps = frames_per_episode // v["action_repeat"]
    if v["nstep"] <= steps:
        return []
    source = f"max_episode_frames={v['max_episode_frames']}" if v["max_episode_frames"] else "the task's 1000 frames"
    return [("nstep", v["nstep"], f"at most the episode's {steps} agent steps = {source} / "
             f"action_repeat={v['action_repeat']}", "agent steps; every longer window is cut at the episode's end")]


def _cuda_graphs(v: Mapping[str, Any]) -> list[tuple[str, Any, str, str]]:
    """Machine rule: runs only in ``check(..., machine=True)``."""
    if v["cuda_graphs"] is not True:
        return []
    import torch

    device = v["device"]
    if torch.cuda.is_available() and device != "cpu":
        return []
    where = f"with device={device}" if torch.cuda.is_available() else "on this machine, which has no CUDA device"
    return [("cuda_graphs", True, f"false {where}",
             "each update replays a captured CUDA graph; use device=auto or cuda on a machine with a GPU")]


def _render_sizes(v: Mapping[str, Any]) -> list[tuple[str, Any, str, str]]:
    from drq.envs import tasks  # pure python: reads the task's XML, no dm_control import

    side = tasks.framebuffer_side(v["task_name"])
    out = []
    for key in ("image_size", "video_size"):
        if side is not None and v[key] > side:
            top = side if key == "image_size" else side - side % 2
            out.append((key, v[key], f"at most {top} for task_name={v['task_name']} (its offscreen framebuffer is "
                        f"{side} pixels high or wide)", "pixels; MuJoCo cannot render a larger picture"))
    return out


RULES: tuple[Rule, ...] = (
    Rule(("action_repeat", *FRAME_COUNTS), "every `*_frames` count is a multiple of `action_repeat`", _multiples),
    Rule(("batch_size", "replay_buffer_size"), "`batch_size` <= `replay_buffer_size`", _batch_fits),
    Rule(("eval_workers", "num_eval_episodes"), "`eval_workers` (when not `auto`) <= `num_eval_episodes`", _eval_workers),
    Rule(("nstep", "max_episode_frames", "action_repeat"),
         "`nstep` <= the episode's agent steps (`max_episode_frames`, or 1000, / `action_repeat`)", _nstep),
    Rule(("image_size", "video_size", "task_name"),
         "`image_size`, `video_size` <= the task's offscreen framebuffer (480 pixels; dog: 1080)", _render_sizes),
)
MACHINE_RULES: tuple[Rule, ...] = (
    Rule(("cuda_graphs", "device"), "`cuda_graphs=true` needs a CUDA device (checked on the machine that runs)",
         _cuda_graphs),
    Rule(("replay_buffer_size", "replay_storage", "batch_size", "image_size", "video_size", "save_video", "eval_workers",
          "num_eval_episodes", "async_env", "num_train_frames", "action_repeat", "max_episode_frames", "nstep",
          "frame_stack", "feature_dim", "hidden_dim", "device", "task_name", "agent.name"),
         "the run's memory at its end (replay, learner, batch, environments, video; drq/config/footprint.py) fits in the "
         "machine's usable RAM (`DRQ_MEMORY_LIMIT`, the cgroup, or MemAvailable), the replay's one allocation in RAM "
         "+ swap, and for `device=cuda` in the GPU's free memory; else one line naming the largest value that fits",
         lambda v: _run_footprint().memory_rule(v)),
    Rule(("eval_workers",), "`eval_workers` <= max(8, 2 x the machine's cores)",
         lambda v: _run_footprint().eval_workers_rule(v)),
)


def _run_footprint() -> Any:
    from drq.config import footprint as run_footprint  # imported when a machine rule runs: it reads /proc, not torch

    return run_footprint


# ------------------------------------------------------------------------------------------------- the checks
def _lookup(cfg: Mapping[str, Any], dotted: str) -> tuple[bool, Any]:
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _check(cfg: Mapping[str, Any], machine: bool, rules: bool = True) -> tuple[list[str], dict[str, Any]]:
    """(violations, the normalised values of the keys that passed)."""
    lines: list[str] = []
    values: dict[str, Any] = {}
    found, name = _lookup(cfg, "agent.name")
    agent = name if found and name in AGENT_CONFIGS else None
    table = _keys(agent or "drqv2")
    if agent is None:  # an unknown agent: its keys cannot be checked, only its name
        table = {k: v for k, v in table.items() if not k.startswith("agent.") or k == "agent.name"}
    for dotted, key in table.items():
        found, value = _lookup(cfg, dotted)
        if not found:
            lines.append(f"{dotted}: missing ({key.allowed}; every key is in cfgs/config.yaml or cfgs/agent/)")
            continue
        try:
            values[dotted] = key.test(value)
            if machine and key.machine is not None:
                key.machine(values[dotted])
        except _Bad as bad:
            values.pop(dotted, None)
            lines.append(key.line(value, bad.hint))
    for section in ("wandb", "agent"):
        found, node = _lookup(cfg, section)
        if not found or (section == "agent" and agent is None):
            continue
        if not isinstance(node, Mapping):
            lines.append(f"{section}={show(node)}: a group of keys ({section}.*), not a value")
            continue
        valid = [k for k in table if k.startswith(section + ".")]
        where = f"agent={agent}" if section == "agent" else section
        for k in node:
            if f"{section}.{k}" not in table:
                hint = closest(f"{section}.{k}", valid)
                lines.append(f"{section}.{k}={show(node[k])}: not a key of {where}{'; ' + hint if hint else ''} "
                             "(docs/configuration.md lists every key)")
    for rule in (RULES if rules else ()) + (MACHINE_RULES if machine else ()):
        if all(k in values for k in rule.keys):
            for key_name, value, allowed, why in rule.test(values):
                lines.append(f"{key_name}={show(value)}: {allowed} ({why})")
    return lines, values


def check(cfg: Mapping[str, Any], machine: bool = False) -> list[str]:
    """Every violation in the composed, resolved config ``cfg`` (a nested dict), one line each; ``[]`` if none.

    ``machine``: also the checks that ask this machine (CUDA for ``device`` / ``cuda_graphs``, ``resume=PATH``)."""
    return _check(cfg, machine)[0]


def values(cfg: RunConfig | Mapping[str, Any]) -> dict[str, Any]:
    """The checked values by dotted key (``{"replay_buffer_size": 1000000, "agent.name": "drqv2", ...}``), the form
    the rules and :mod:`drq.config.footprint` read; raises :class:`ConfigError` if a key is bad."""
    cfg = cfg.to_dict() if isinstance(cfg, RunConfig) else cfg
    lines, found = _check(cfg, machine=False, rules=False)
    if lines:
        raise ConfigError("\n".join(lines))
    return found


def load(cfg: Mapping[str, Any], machine: bool = False, rules: bool = True) -> RunConfig:
    """The typed :class:`RunConfig` of a composed, resolved config; :class:`ConfigError` (one line per violation)
    if any key is bad. Keys the schema does not know (``+key=value`` on the command line) are kept in ``extra``.
    ``rules=False`` skips the rules between keys (each key's own check still runs)."""
    lines, values = _check(cfg, machine, rules)
    if lines:
        raise ConfigError("\n".join(lines))
    known = {f.name for f in dataclasses.fields(RunConfig)}
    extra = {k: v for k, v in cfg.items() if k not in known}

    def build(cls: type, prefix: str) -> Any:
        kwargs = {}
        for name, f in _fields(cls, prefix):
            short = name.rsplit(".", 1)[-1]
            if "table" in f.metadata:
                sub = f.metadata["table"]
                sub = AGENT_CONFIGS[values["agent.name"]] if sub is AgentConfig else sub
                kwargs[short] = build(sub, name + ".")
            else:
                kwargs[short] = values[name]
        return cls(**kwargs)

    return dataclasses.replace(build(RunConfig, ""), extra=extra)


def as_config(cfg: RunConfig | Mapping[str, Any]) -> RunConfig:
    """``cfg`` if it is a :class:`RunConfig`, else :func:`load` of it."""
    return cfg if isinstance(cfg, RunConfig) else load(cfg)


@lru_cache(maxsize=None)
def _yaml(path: Path) -> dict[str, Any]:
    from omegaconf import OmegaConf

    node = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    return {k: v for k, v in node.items() if k not in ("defaults", "hydra")}


def defaults(agent: str = "drqv2", resolve: bool = True) -> dict[str, Any]:
    """The values of cfgs/config.yaml with cfgs/agent/<agent>.yaml on top (no preset, task or protocol file):
    every key's default; ``resolve=False`` keeps interpolations such as ``agent.lr: ${lr}``."""
    from omegaconf import OmegaConf

    merged = OmegaConf.merge(_yaml(CONFIG_DIR / "config.yaml"), _yaml(CONFIG_DIR / "agent" / f"{agent}.yaml"))
    return OmegaConf.to_container(merged, resolve=resolve)


def from_saved(saved: Mapping[str, Any]) -> RunConfig:
    """The :class:`RunConfig` of a snapshot's saved config, missing keys filled by :func:`fill_saved`. Each key is
    checked, the rules between keys are not (a run made before a rule still evaluates). Keys the schema no longer
    knows (``precision_resolved``, ...) are kept in ``extra``."""
    return load(fill_saved(saved), rules=False)


def fill_saved(saved: Mapping[str, Any]) -> dict[str, Any]:
    """A snapshot's saved config with every key: a key it lacks (the snapshot predates the key) takes the key's
    ``legacy`` value where the schema states one, else its default (:func:`defaults` for the saved agent);
    interpolated defaults (``agent.lr: ${lr}``) follow the saved top-level keys. Nothing is checked."""
    from omegaconf import OmegaConf

    found, name = _lookup(saved, "agent.name")
    agent = name if found and name in AGENT_CONFIGS else "drqv2"
    saved = _plain(dict(saved))
    for dotted, key in keys(agent).items():
        if key.legacy is not _NO_LEGACY and not _lookup(saved, dotted)[0]:
            node = saved
            for part in dotted.split(".")[:-1]:
                node = node.setdefault(part, {})
            node[dotted.rsplit(".", 1)[-1]] = key.legacy
    merged = OmegaConf.merge(OmegaConf.create(defaults(agent, resolve=False)), OmegaConf.create(saved))
    return OmegaConf.to_container(merged, resolve=True)


# ---------------------------------------------------------------------------------------------------- the docs
def markdown() -> str:
    """docs/configuration.md: the table of every key (``python -m drq.config.schema --markdown``)."""
    drqv2, sac = defaults("drqv2", resolve=False), defaults("sac", resolve=False)
    rows = ["| key | type | unit | default | allowed | why |", "|---|---|---|---|---|---|"]
    for dotted, key in keys().items():
        found_d, d = _lookup(drqv2, dotted)
        found_s, s = _lookup(sac, dotted)
        if found_d and found_s and d != s:
            default = f"`{show(d)}` (sac: `{show(s)}`)"
        else:
            default = f"`{show(d if found_d else s)}`"
        agent = " (drqv2)" if dotted.startswith("agent.") and not found_s else (
            " (sac)" if dotted.startswith("agent.") and not found_d else "")
        cells = [f"`{dotted}`{agent}", key.kind, key.unit or "", default, key.allowed, key.why]
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    rules = [f"- {r.words}" for r in RULES + MACHINE_RULES]
    return "\n".join([
        "# Configuration",
        "",
        "<!-- generated by `python -m drq.config.schema --markdown > docs/configuration.md`; "
        "tests/test_config_schema.py checks it is up to date -->",
        "",
        "Every key of `cfgs/`, from the one schema in `drq/config/schema.py`. `train.py` checks the composed config",
        "against it before hydra writes anything or any environment starts: each bad value gives one line",
        "`drq: <key>=<value>: <what is allowed> (<unit>; <why>)`, and the exit code is 2.",
        "",
        "**Units.** A key ending in `_frames` counts environment frames (the clock you see: `frame` columns, the",
        "progress bar); a key ending in `_steps` counts agent steps (one agent step = `action_repeat` frames). Other",
        "counts name their unit below: `replay_buffer_size` and `batch_size` count transitions (one per agent step),",
        "`stddev_schedule`'s duration counts agent steps (as in DrQ-v2: `linear(1.0,0.1,500000)` reaches 0.1 at",
        "agent step 500,000 = frame 1,000,000 with action repeat 2).",
        "",
        "**Defaults** are those of `cfgs/config.yaml` with `cfgs/agent/<agent>.yaml` on top; the protocol",
        "(`cfgs/protocol/<agent>/<task>.yaml`), the preset (`cfgs/preset/`) and the task file (`cfgs/task/`) then",
        "change some of them, in that order, and the command line comes last. Groups: `agent=drqv2|sac`,",
        "`task=<cfgs/task/*.yaml>`, `preset=easy|medium|hard|debug`.",
        "",
        *rows,
        "",
        "## Rules between keys",
        "",
        *rules,
        "",
        "A snapshot's config that lacks a key (made before the key existed) reads it as its `legacy` value where",
        "the schema gives one (`agent.target_encoder`: false), else as the default above.",
        "",
    ])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv != ["--markdown"]:
        print("usage: python -m drq.config.schema --markdown > docs/configuration.md", file=sys.stderr)
        return 2
    sys.stdout.write(markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
