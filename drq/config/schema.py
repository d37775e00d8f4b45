"""Every key of `cfgs/`, declared once (type, unit, allowed values, why) with its test; the rules between keys; the
typed :class:`RunConfig`. ``check(cfg)`` lists the violations, ``load(cfg)`` gives the frozen config or raises
:class:`ConfigError`. docs/configuration.md is generated from it (``python -m drq.config.schema --markdown``)."""

from __future__ import annotations

import dataclasses
import difflib
import re
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Iterable, Mapping

from drq.config import footprint
from drq.envs import FAST_RENDER_CHOICES
from drq.machine import stop_signals
from drq.speed import COMPILE_MODES, PRECISIONS

CONFIG_DIR = Path(__file__).resolve().parents[2] / "cfgs"
FRAMES, STEPS, TRANSITIONS, PIXELS = "frames", "agent steps", "transitions", "pixels"
WANDB_MODES = ("auto", "online", "offline", "disabled")  # drq.run.sinks reads them from here
AGENT_NAMES = ("drqv2", "sac")  # drq.agents.AGENTS builds them (a test holds the two to the same names)
REPLAY_STORAGES = ("auto", "ram", "disk")  # auto: drq.config.footprint.storage_decision
SCHEDULE = "a number or 'linear(init,final,duration)' / 'step_linear(init,f1,d1,f2,d2)' with std > 0"
_NO_LEGACY = object()


class ConfigError(ValueError):
    """A bad configuration: one line per violation, each naming the key, the value and what is allowed."""


class _Bad(Exception):
    """A key's test rejects the value; ``args``: an optional hint (the closest choices, the reason)."""


@dataclass(frozen=True)
class Key:
    """One key. ``test``: value -> normalised value, or raises ``_Bad``; ``machine``: value -> what is wrong on this
    machine or None (run by ``check(machine=True)`` only); ``legacy``: what a saved config made before the key existed
    means (default: the key's default)."""

    kind: str  # the type, in words
    allowed: str  # what passes, in words
    test: Callable[[Any], Any]
    unit: str = ""
    why: str = ""
    machine: Callable[[Any], str | None] | None = None
    legacy: Any = _NO_LEGACY


def show(value: Any) -> str:
    """A value as it would be typed on the command line (``null``, ``true``, ``[a,b]``, ``'x y'``)."""
    if value is None or isinstance(value, bool):
        return "null" if value is None else str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(show(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{k}:{show(v)}" for k, v in value.items()) + "}"
    if isinstance(value, str):
        return value if value and not re.search(r"[\s,='\"]", value) else repr(value)  # a:b needs no quotes
    return repr(value)


def closest(value: Any, choices: Iterable[Any], n: int = 3) -> str:
    """``'closest: a, b'`` for the choices nearest ``value`` by spelling (or containing it), or '' if none is."""
    names, text = [str(c) for c in choices], str(value)
    near = difflib.get_close_matches(text, names, n=n, cutoff=0.5) or [
        c for c in names if text.lower() in c.lower() or c.lower() in text.lower()][:n]
    return f"closest: {', '.join(near)}" if near else ""


def group_choices(group: str, config_dir: Path = CONFIG_DIR) -> list[str]:
    """Names of the configs in ``cfgs/<group>/`` (without ``.yaml``), sorted."""
    return sorted(p.stem for p in (config_dir / group).glob("*.yaml"))


# ------------------------------------------------------------------------------------------------------- value tests
def _ok(passes: Any, value: Any, hint: str = "") -> Any:
    """``value`` if ``passes``, else :class:`_Bad` (with ``hint``): most keys' tests are one expression."""
    if not passes:
        raise _Bad(hint)
    return value


def _num(low: float | None = None, high: float | None = None, integer: bool = False, low_open: bool = False,
         even: bool = False) -> Callable[[Any], Any]:  # fmt: skip
    """The test of a number in [low, high] (``(low, high]`` with ``low_open``): a float, or a whole int with
    ``integer`` (and an even one with ``even``); never a bool, nan or inf."""
    def test(v: Any) -> Any:
        v = int(v) if integer and isinstance(v, float) and v.is_integer() else v  # hydra reads 1e6 as a float
        _ok(not isinstance(v, bool) and isinstance(v, int if integer else (int, float)), v)
        v = v if integer else float(_ok(abs(v) <= sys.float_info.max, v))  # not nan, inf or 1e400
        above = low is None or v > low or (v == low and not low_open)
        return _ok(above and (high is None or v <= high) and not (even and v % 2), v)

    return test


def _choice(choices: Iterable[str]) -> Callable[[Any], str]:
    return lambda v: _ok(isinstance(v, str) and v in choices, v, closest(v, choices) if isinstance(v, str) else "")


def _alias(test: Callable[[Any], Any], meaning: Mapping[Any, Any]) -> Callable[[Any], Any]:
    """Values that stand for another (``{None: False, True: 'no_msaa'}``, ``{'auto': 'auto'}``), matched with their
    type (1 is not true); any other value goes to ``test``."""
    def alias(v: Any) -> Any:
        words = [word for word in meaning if v == word and type(v) is type(word)]
        return meaning[words[0]] if words else test(v)

    return alias


def _text(v: Any) -> str:
    return _ok(isinstance(v, str) and v != "", v)


TASK_NAME_ALLOWED = "a DrQ-v2 task or a dm_control suite domain_task (with task=gym: gym.id)"


def _task_name(v: Any) -> str:
    """A name; which names exist is the rule :func:`_task`'s (a Gymnasium id passes there with task=gym)."""
    if v is None:
        raise _Bad("task=gym needs gym.id: python train.py task=gym gym.id=InvertedPendulum-v5 (or "
                   "gym.id=module.path:ClassName)")
    return _text(v)


def _gym_kwargs(v: Any) -> dict[str, Any]:
    return dict(_ok(isinstance(v, Mapping) and all(isinstance(k, str) and k for k in v), v))


def _gym_id_here(v: str | None) -> str | None:
    """What is wrong with ``gym.id`` here (not registered, not importable, a package extra missing), or None."""
    from drq.envs import gym_ids  # imports gymnasium's registry, and the env's module (never builds the env)

    return None if v is None else gym_ids.problem(v)


def _schedule(v: Any) -> str | float:
    from drq.agents.schedules import parse_schedule  # pure python (the package imports torch)

    try:
        low = parse_schedule(v).min_value
    except ValueError:
        raise _Bad() from None
    return _ok(low > 0, float(v) if isinstance(v, (int, float)) else v, f"it reaches std {low:g}")


def _signals(v: Any) -> tuple[str, ...]:
    try:
        return tuple(s.name for s in stop_signals.parse(_ok(isinstance(v, (list, tuple, str)), v)))
    except ValueError as error:
        bad = re.search(r"stop_signals: ('.*?') is not one", str(error))
        raise _Bad(f"{bad.group(1) if bad else 'an entry'} is not one") from None


# -------------------------------------------------------------------------------------------------------- the keys
def key(kind: str, allowed: str, test: Callable[[Any], Any], unit: str = "", why: str = "", **kw: Any) -> Any:
    """A dataclass field (no default: every value comes from cfgs/) carrying its :class:`Key`."""
    return dataclasses.field(metadata={"key": Key(kind, allowed, test, unit, why, **kw)})


def count(unit: str, why: str, low: int = 1, high: int | None = None, allowed: str = "", **kw: Any) -> Any:
    words = f"an integer in [{low}, {high}]" if high is not None else f"an integer >= {low}"
    return key("int", allowed or words, _num(low, high, integer=True), unit, why, **kw)


def frames(why: str, low: int = 1) -> Any:
    """A count of frames: a multiple of action_repeat too (:data:`RULES`)."""
    return count(FRAMES, why, low, allowed=f"an integer >= {low}, a multiple of action_repeat")


def number(why: str, low: float = 0, high: float | None = None, low_open: bool = False, unit: str = "") -> Any:
    left = "(" if low_open else "["
    words = f"a number {'>' if low_open else '>='} {low:g}" if high is None else f"a number in {left}{low:g}, {high:g}]"
    return key("float", words, _num(low, high, low_open=low_open), unit, why)


def flag(why: str, **kw: Any) -> Any:
    return key("bool", "true or false", lambda v: _ok(isinstance(v, bool), v), why=why, **kw)


def choice(choices: tuple[str, ...], why: str) -> Any:
    return key("str", f"one of {', '.join(choices)}", _choice(choices), why=why)


def text(why: str) -> Any:
    return key("str | null", "null or a non-empty string", _alias(_text, {None: None}), why=why)


@dataclass(frozen=True)
class WandbConfig:
    """``wandb.*``: where the run's metrics go (drq.run.sinks.WandbSink)."""

    mode: str = choice(WANDB_MODES, "auto: online with credentials, else offline; nothing waits on a login")
    project: str = key("str", "a non-empty string", _text, why="wandb project")
    entity: str | None = text("wandb entity; null: your default entity")
    group: str | None = text("wandb group")
    tags: tuple[str, ...] = key("list[str]", "a list of non-empty strings, e.g. [a,b]", why="wandb tags", test=lambda v:
        tuple(_ok(isinstance(v, (list, tuple)) and all(isinstance(t, str) and t for t in v), v)))
    name: str | None = text("wandb run name; null: <task>_<agent>_seed<seed>")


@dataclass(frozen=True)
class GymConfig:
    """``gym.*``: a Gymnasium environment, trained on with ``task=gym`` (drq.envs.gym_pixels; docs/gymnasium.md)."""

    id: str | None = key("str | null", "null, a Gymnasium id or module.path:ClassName", _alias(_text, {None: None}),
                         machine=_gym_id_here, why="with task=gym: the env, and the run's name; docs/gymnasium.md")
    kwargs: dict[str, Any] = key("mapping", "a mapping of keyword arguments, e.g. {camera_name:track}", _gym_kwargs,
                                 why="passed to gymnasium.make(id, ...) or the class; add one with "
                                 "+gym.kwargs.camera_name=track")
    pixels: str = key("str", "render, observation or a key of the env's Dict observation", _text,
                      why="render: env.render() (rgb_array); observation: the observation is the image")


@dataclass(frozen=True)
class AgentConfig:
    """``agent.*`` keys both agents have; the ``agent:`` block of cfgs/agent/<name>.yaml is the constructor's keyword
    arguments (``drq.agents.make_agent(name, **kwargs)``), typed and checked here (the agents need not check them)."""

    name: str = choice(AGENT_NAMES, "the agent; the agent= group sets it")
    lr: float = number("Adam learning rate of every network", low_open=True)
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
    stddev_schedule: str | float = key("schedule", SCHEDULE, _schedule, f"duration in {STEPS}",
                                       "exploration std; = ${stddev_schedule}")
    stddev_clip: float = number("clip of the target policy's and the actor's noise", low_open=True)


@dataclass(frozen=True)
class SACAgentConfig(AgentConfig):
    """``agent=sac`` (DrQ: Kostrikov, Yarats & Fergus 2020)."""

    init_temperature: float = number("initial entropy temperature alpha", low_open=True)
    log_std_bounds: tuple[float, float] = key("list[float]", "[low, high] with low < high", test=lambda v: tuple(map(
        float, _ok(isinstance(v, (list, tuple)) and len(v) == 2 and _num()(v[0]) < _num()(v[1]), v))),
                                              why="bounds of the actor's log std, tanh-rescaled")
    actor_update_every_steps: int = count(STEPS, "actor and alpha step every this many agent steps")
    critic_target_update_every_steps: int = count(STEPS, "soft target update every this many agent steps")
    num_target_augs: int = count("augmentations", "K: target Q averaged over K augmentations of next_obs")
    num_critic_augs: int = count("augmentations", "M: critic loss summed over M augmentations of obs")
    target_encoder: bool = flag("DrQ's layout: an EMA target encoder, the actor re-encodes; false: DrQ-v2's",
                                legacy=False)  # snapshots made before this key had no target encoder


AGENT_CONFIGS: dict[str, type[AgentConfig]] = dict(zip(AGENT_NAMES, (DrQV2AgentConfig, SACAgentConfig)))


@dataclass(frozen=True)
class RunConfig:
    """A whole run's configuration, checked and typed: what the trainer reads (it has no defaults of its own)."""

    # ---- task
    task_name: str = key("str", TASK_NAME_ALLOWED, _task_name,
                         why="the task= group sets it; any other suite task: task_name=point_mass_easy")
    frame_stack: int = count("frames per observation", "observation = the last k frames, oldest first")
    action_repeat: int = count("frames per agent step", "each action is repeated this many frames")
    discount: float = number("gamma per agent step", 0, 1, unit="per agent step")
    image_size: int = count(PIXELS, "H = W of the agent's observations; the conv stack needs >= 15", low=15)
    camera_id: int | str | None = key("int | str | null", "null, an integer >= -1 or a camera name", why="null: the "
                                      "task's camera, 2 for quadruped, else 0", test=lambda v: v if v is None or (
                                          isinstance(v, str) and v) else _num(-1, integer=True)(v))
    fast_render: str | bool = key(
        "str | false", "one of false, no_msaa, no_shadows; true = no_msaa", why="faster software rendering, slightly "
        "different pixels", test=_alias(_choice(FAST_RENDER_CHOICES[2:]), {None: False, False: False, True: "no_msaa"}),
    )
    max_episode_frames: int | None = key("int | null", "null or an integer >= 1, a multiple of action_repeat",
                                         _alias(_num(1, integer=True), {None: None}), FRAMES,
                                         "null: the task's own limit (DMC: 1000 frames)")
    gym: GymConfig = dataclasses.field(metadata={"table": GymConfig})
    # ---- training and evaluation
    num_train_frames: int = frames("train until this frame; the preset sets it")
    num_seed_frames: int = frames("uniform random actions and no updates before this frame", low=0)
    eval_every_frames: int = frames("evaluate at frames 0, E, 2E, ... and at the end")
    num_eval_episodes: int = count("episodes", "episodes per evaluation, acting with the mean action")
    eval_workers: int | str = key("int | auto", "'auto' or an integer >= 1, at most num_eval_episodes",
                                  _alias(_num(1, integer=True), {"auto": "auto"}), "processes",
                                  "eval episodes side by side; auto: one per core, <= 8, 1 = in-process")
    save_video: bool = flag("first episode of each evaluation -> videos/eval_<frame>.mp4 and wandb")
    video_size: int = key("int", "an even integer >= 16", _num(16, integer=True, even=True), PIXELS,
                          "H = W of the evaluation videos; H.264 needs even sizes")
    # ---- replay
    replay_buffer_size: int = count(TRANSITIONS, "replay capacity, one transition per agent step")
    replay_storage: str = choice(REPLAY_STORAGES, "where the replay's frames live: ram (on device), disk (a memory-"
                                 "mapped file in the run dir, read through the page cache); auto: ram when the "
                                 "replay's final size fits in usable memory with 3 GiB to spare, else disk")
    nstep: int = count(STEPS, "n-step returns, cut at the episode's end")
    batch_size: int = count(TRANSITIONS, "transitions per update, at most replay_buffer_size")
    # ---- shared agent hyper-parameters (agent/*.yaml reads them as ${lr} etc.)
    lr: float = number("learning rate; agent.lr = ${lr}; presets and tasks set it", low_open=True)
    feature_dim: int = count("features", "trunk output width; agent.feature_dim = ${feature_dim}")
    hidden_dim: int = count("units", "MLP width; agent.hidden_dim = ${hidden_dim}")
    stddev_schedule: str | float = key("schedule", SCHEDULE, _schedule, f"duration in {STEPS}", "DrQ-v2's "
                                       "exploration std; the preset sets it; quote it for hydra: "
                                       "stddev_schedule='linear(1,0.1,5e5)'")  # fmt: skip
    # ---- logging
    log_every_frames: int = frames("health/ metrics: means over the window, read from the device only here")
    histogram_every_frames: int = frames("wandb histograms of per-sample log-prob and |pre-tanh|")
    wandb: WandbConfig = dataclasses.field(metadata={"table": WandbConfig})
    # ---- snapshots and resume
    save_snapshot: bool = flag("write snapshot.pt periodically, at the end and on a stop signal")
    snapshot_every_frames: int = frames("snapshot at the first episode boundary after each multiple")
    save_replay_in_snapshot: bool = flag("false: smaller snapshots; a resumed run starts with an empty replay")
    resume: str = key("str", "auto, never, or a snapshot.pt / a run dir holding one", machine=footprint.resume_here,
                      test=_alias(_text, {None: "auto", True: "auto", False: "never"}),
                      why="auto: continue if the run dir holds snapshot.pt")
    stop_signals: tuple[str, ...] = key("list[str]", f"a list of {', '.join(stop_signals.CHOICES)}", _signals,
                                        why="snapshot at the next safe point, exit 128+signal; docs/clusters.md")
    # ---- failing environments (drq.run.restarts; docs/clusters.md)
    env_timeout_seconds: float = number("an env worker's reset, step or render taking longer is a hang: the worker is "
                                        "killed and restarted", low_open=True, unit="seconds")
    env_start_timeout_seconds: float = number("the same for an env worker's start and first reset (simulator import, "
                                              "model compile, renderer start)", low_open=True, unit="seconds")
    env_restart_limit: int = count("restarts", "restarts of one env (train, or eval k) allowed within "
                                   "env_restart_window_frames; one more: snapshot, one line, exit 3", low=0)
    env_restart_window_frames: int = frames("the window of env_restart_limit, in frames of training")
    # ---- hardware
    seed: int = count("", "seeds python, numpy, torch, the train env; eval episode j at frame F: (seed, F, j)", low=0,
                      high=2**31 - 1)
    device: str = key("str", "auto, cpu, cuda or cuda:N", machine=footprint.device_here, test=lambda v: _ok(
        isinstance(v, str) and re.fullmatch(r"auto|cpu|cuda(:\d+)?", v), v, closest(v, ("auto", "cpu", "cuda"))),
                      why="auto: cuda if available, else cpu")
    precision: str = choice(PRECISIONS, "autocast; auto: bf16 where the hardware has it natively, else fp32")
    compile: str = key("str", "one of none, default, max-autotune; true = default, false = none",
                       _alias(_choice(COMPILE_MODES), {None: "none", False: "none", True: "default"}),
                       why="torch.compile of the networks, compiled on the first update")
    cuda_graphs: bool = flag("each update replays one captured CUDA graph; CUDA only")
    async_env: bool = flag("step and render the training env in a worker process while the agent updates")
    num_threads: int | str = key("int | auto", "'auto' or an integer >= 1",
                                 _alias(_num(1, integer=True), {"auto": "auto"}),
                                 "threads", "torch threads; auto: all cores, one fewer with async_env on more than 4")
    agent: AgentConfig = dataclasses.field(metadata={"table": AgentConfig})  # the agent's own config class
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict, metadata={"extra": True})

    def to_dict(self) -> dict[str, Any]:
        """The config as plain python (lists, dicts): for the snapshot, wandb's config and ``.get``-free readers."""
        return {**_plain(self), **_plain(dict(self.extra))}


def _plain(node: Any) -> Any:
    if dataclasses.is_dataclass(node):
        return {f.name: _plain(getattr(node, f.name)) for f in dataclasses.fields(node) if not f.metadata.get("extra")}
    if isinstance(node, (list, tuple)):
        return [_plain(v) for v in node]
    return {k: _plain(v) for k, v in node.items()} if isinstance(node, Mapping) else node


@lru_cache(maxsize=None)
def keys(agent: str | None = None) -> Mapping[str, Key]:
    """Every key, dotted (``'wandb.mode'``, ``'agent.lr'``) -> its :class:`Key`, in cfgs/config.yaml's order, read-only;
    ``agent``: only that agent's ``agent.*`` keys (default: both agents')."""
    out: dict[str, Key] = {}

    def walk(cls: type, prefix: str) -> None:
        for f in dataclasses.fields(cls):
            sub = f.metadata.get("table")
            if sub is AgentConfig:
                for name in [agent] if agent else AGENT_NAMES:
                    walk(AGENT_CONFIGS[name], f"{prefix}{f.name}.")
            elif sub:
                walk(sub, f"{prefix}{f.name}.")
            elif "key" in f.metadata:
                out.setdefault(prefix + f.name, f.metadata["key"])

    walk(RunConfig, "")
    return MappingProxyType(out)


def _lookup(cfg: Any, dotted: str) -> tuple[bool, Any]:
    """(whether the nested ``cfg`` has the key ``dotted``, its value)."""
    for part in dotted.split("."):
        if not isinstance(cfg, Mapping) or part not in cfg:
            return False, None
        cfg = cfg[part]
    return True, cfg


# --------------------------------------------------------------------------------------------- rules between keys
# Each rule reads the checked values by dotted key and returns its violations as (key, value, allowed, why); a rule
# that reads a key which failed its own check is skipped (:class:`_Passed`).
FRAME_COUNTS = tuple(k for k in keys() if k.endswith("_frames"))


def _multiples(v: Mapping[str, Any]) -> list[tuple[str, Any, str, str]]:
    repeat, out = v["action_repeat"], []
    for k, value in [(k, v[k]) for k in FRAME_COUNTS]:
        if value is not None and value % repeat:
            low = value - value % repeat
            near = " or ".join(str(n) for n in (low, low + repeat) if n > 0 or (k == "num_seed_frames" and n == 0))
            out.append((k, value, f"a multiple of action_repeat={repeat}, e.g. {near}",
                        "frames; the loop advances action_repeat frames per agent step, so other values drift"))
    return out


def _nstep(v: Mapping[str, Any]) -> list[tuple[str, Any, str, str]]:
    repeat, (frames, source, known) = v["action_repeat"], footprint.episode_frames(v)
    steps = frames // repeat
    return [("nstep", v["nstep"], f"at most the episode's {steps} agent steps = {source} / action_repeat={repeat}",
             "agent steps; every longer window is cut at the episode's end")] if known and v["nstep"] > steps else []


def _task(v: Mapping[str, Any]) -> list[tuple[str, Any, str, str]]:
    """task=gym (``task_name`` = ``gym.id``) or a DMC task; with task=gym the DMC-only keys keep their defaults."""
    from drq.envs import tasks  # pure python: no dm_control, no GL

    task, gym_id = v["task_name"], v["gym.id"]
    if gym_id is None:
        try:
            tasks.resolve_task(task)
            return []
        except ValueError:
            hint = closest(task, tasks.TASK_NAMES)
            return [("task_name", task, TASK_NAME_ALLOWED + (f"; {hint}" if hint else ""),
                     "the task= group sets it; any other suite task: task_name=point_mass_easy; a Gymnasium env: "
                     f"task=gym gym.id={task}")]
    if task != gym_id:
        return [("gym.id", gym_id, f"given with task=gym (python train.py task=gym gym.id={gym_id}); task_name={task}",
                 "task=gym names the run after the env; without it the run is the DMC task")]
    dmc = "a DMC key; docs/gymnasium.md#cameras"
    return [(k, v[k], f"{show(default)} with task=gym; {hint}", dmc) for k, default, hint in (
        ("camera_id", None, "a gymnasium MuJoCo env takes +gym.kwargs.camera_name=NAME or +gym.kwargs.camera_id=N"),
        ("fast_render", False, "gymnasium's MuJoCo envs render at full quality")) if v[k] != default]  # fmt: skip


def _render_sizes(v: Mapping[str, Any]) -> list[tuple[str, Any, str, str]]:
    from drq.envs import tasks  # pure python: reads the task's XML, no dm_control import

    side, task = tasks.framebuffer_side(v["task_name"]), v["task_name"]
    return [(k, v[k], f"at most {side if k == 'image_size' else side - side % 2} for task_name={task} (its offscreen "
             f"framebuffer is {side} pixels high or wide)", "pixels; MuJoCo cannot render a larger picture")
            for k in ("image_size", "video_size") if side is not None and v[k] > side]  # fmt: skip


RULES = (
    ("`task_name` is a DMC task, or with `task=gym` it is `gym.id`, and `camera_id`, `fast_render` (DMC keys) keep "
     "their defaults", _task),
    ("every `*_frames` count is a multiple of `action_repeat`", _multiples),
    ("`batch_size` <= `replay_buffer_size`", lambda v: [] if v["batch_size"] <= v["replay_buffer_size"] else [(
        "batch_size", v["batch_size"], f"at most replay_buffer_size={v['replay_buffer_size']}", "transitions; a batch "
        "larger than the replay can ever hold repeats transitions in every batch")]),
    ("`eval_workers` (when not `auto`) <= `num_eval_episodes`", lambda v: [] if v["eval_workers"] == "auto"
     or v["eval_workers"] <= v["num_eval_episodes"] else [("eval_workers", v["eval_workers"], "'auto' or at most "
     f"num_eval_episodes={v['num_eval_episodes']}", "processes; more workers than episodes would start environments "
     "that never play")]),
    ("`nstep` <= the episode's agent steps (`max_episode_frames`, or the task's time limit, / `action_repeat`)",
     _nstep),
    ("`image_size`, `video_size` <= the task's offscreen framebuffer (480 pixels; dog: 1080)", _render_sizes),
)
MACHINE_RULES = footprint.MACHINE_RULES  # run by check(machine=True) only: they ask this machine


# ------------------------------------------------------------------------------------------------------ the checks
class _Passed(dict):
    """The values that passed their checks; reading one that did not raises :class:`_Bad`, which skips the rule."""

    def __missing__(self, name: str) -> Any:
        raise _Bad(name)


def _line(key: str, value: Any, allowed: str, why: str, hint: str = "") -> str:
    return f"{key}={show(value)}: {allowed}{'; ' + hint if hint else ''}" + (f" ({why})" if why else "")


def _check(cfg: Mapping[str, Any], machine: bool, rules: bool = True) -> tuple[list[str], dict[str, Any]]:
    """(the violations, one line each; the normalised values of the keys that passed, by dotted key)."""
    lines, passed, agent = [], _Passed(), _lookup(cfg, "agent.name")[1]
    agent = agent if isinstance(agent, str) and agent in AGENT_CONFIGS else None
    table = {k: v for k, v in keys(agent or "drqv2").items()
             if agent or k == "agent.name" or not k.startswith("agent.")}  # an unknown agent: only its name is checked
    for dotted, k in table.items():
        found, value = _lookup(cfg, dotted)
        if not found:
            lines.append(f"{dotted}: missing ({k.allowed}; every key is in cfgs/config.yaml or cfgs/agent/)")
            continue
        try:
            passed[dotted] = k.test(value)
            problem = k.machine(passed[dotted]) if machine and k.machine else None
            _ok(not problem, value, problem)
        except _Bad as bad:
            passed.pop(dotted, None)
            lines.append(_line(dotted, value, k.allowed, "; ".join(p for p in (k.unit, k.why) if p), *bad.args))
    for section in ("wandb", "gym", "agent") if agent else ("wandb", "gym"):
        found, node = _lookup(cfg, section)
        if not isinstance(node, Mapping):
            lines += [f"{section}={show(node)}: a group of keys ({section}.*), not a value"] if found else []
            continue
        where, valid = f"agent={agent}" if section == "agent" else section, [k for k in table if k.startswith(section)]
        lines += [_line(f"{section}.{k}", node[k], f"not a key of {where}", "docs/configuration.md lists every key",
                        closest(f"{section}.{k}", valid)) for k in node if f"{section}.{k}" not in table]
    for _, rule in (RULES if rules else ()) + (MACHINE_RULES if machine else ()):
        try:
            lines += [_line(*violation) for violation in rule(passed)]
        except _Bad:  # it read a key that failed its own check
            pass
    return lines, dict(passed)


def check(cfg: Mapping[str, Any], machine: bool = False) -> list[str]:
    """Every violation in the composed, resolved config ``cfg`` (a nested dict), one line each; ``[]`` if none.
    ``machine``: also the checks that ask this machine (CUDA, ``resume=PATH``, memory, cores)."""
    return _check(cfg, machine)[0]


def values(cfg: RunConfig | Mapping[str, Any], machine: bool = False, rules: bool = False) -> dict[str, Any]:
    """The checked values by dotted key (``{"agent.name": "drqv2", ...}``), as the rules and
    :mod:`drq.config.footprint` read them, or :class:`ConfigError`; by default without the rules between keys."""
    lines, found = _check(cfg.to_dict() if isinstance(cfg, RunConfig) else cfg, machine, rules)
    if lines:
        raise ConfigError("\n".join(lines))
    return found


def load(cfg: Mapping[str, Any], machine: bool = False, rules: bool = True) -> RunConfig:
    """The typed :class:`RunConfig` of a composed, resolved config, or :class:`ConfigError` (one line per violation).
    Keys the schema does not know (``+key=value``) are kept in ``extra``; ``rules=False`` skips the rules between
    keys."""
    found = values(cfg, machine, rules)

    def build(cls: type, prefix: str) -> Any:
        args = {}
        for f in dataclasses.fields(cls):
            sub = f.metadata.get("table")
            if sub:
                args[f.name] = build(AGENT_CONFIGS[found["agent.name"]] if sub is AgentConfig else sub, f"{f.name}.")
            elif "key" in f.metadata:
                args[f.name] = found[prefix + f.name]
        return cls(**args)

    known = {f.name for f in dataclasses.fields(RunConfig)}
    return dataclasses.replace(build(RunConfig, ""), extra={k: v for k, v in cfg.items() if k not in known})


def as_config(cfg: RunConfig | Mapping[str, Any]) -> RunConfig:
    """``cfg`` if it is a :class:`RunConfig`, else :func:`load` of it."""
    return cfg if isinstance(cfg, RunConfig) else load(cfg)


# ------------------------------------------------------------------------------------------- defaults, saved runs
def defaults(agent: str = "drqv2", resolve: bool = True) -> dict[str, Any]:
    """cfgs/config.yaml with cfgs/agent/<agent>.yaml on top (no preset, task or protocol file): every key's default;
    ``resolve=False`` keeps interpolations such as ``agent.lr: ${lr}``."""
    from omegaconf import OmegaConf

    files = [OmegaConf.to_container(OmegaConf.load(path), resolve=False) for path in
             (CONFIG_DIR / "config.yaml", CONFIG_DIR / "agent" / f"{agent}.yaml")]  # fmt: skip
    merged = OmegaConf.merge(*[{k: v for k, v in f.items() if k not in ("defaults", "hydra")} for f in files])
    return OmegaConf.to_container(merged, resolve=resolve)


def fill_saved(saved: Mapping[str, Any]) -> dict[str, Any]:
    """A snapshot's saved config with every key: a key it lacks (made before the key existed) takes its ``legacy``
    value where the schema states one, else its default (:func:`defaults` of the saved agent); interpolated defaults
    (``agent.lr: ${lr}``) follow the saved top-level keys. Nothing is checked."""
    from omegaconf import OmegaConf

    agent = _lookup(saved, "agent.name")[1]
    agent, legacy = agent if agent in AGENT_NAMES else "drqv2", OmegaConf.create()
    for dotted, k in keys(agent).items():
        if k.legacy is not _NO_LEGACY:
            OmegaConf.update(legacy, dotted, k.legacy)  # the saved value, merged last, wins where there is one
    merged = OmegaConf.merge(defaults(agent, resolve=False), legacy, _plain(dict(saved)))
    return OmegaConf.to_container(merged, resolve=True)


def from_saved(saved: Mapping[str, Any]) -> RunConfig:
    """The :class:`RunConfig` of a snapshot's saved config (:func:`fill_saved`); each key is checked, the rules between
    keys are not (a run made before a rule still evaluates); keys the schema no longer knows go to ``extra``."""
    return load(fill_saved(saved), rules=False)


# -------------------------------------------------------------------------------------------------------- the docs
def markdown() -> str:
    """docs/configuration.md: docs/templates/configuration.md with the table of every key and the rules filled in."""
    drqv2, sac = defaults("drqv2", resolve=False), defaults("sac", resolve=False)
    rows = ["| key | type | unit | default | allowed | why |", "|---|---|---|---|---|---|"]
    for dotted, k in keys().items():
        (in_d, d), (in_s, s) = _lookup(drqv2, dotted), _lookup(sac, dotted)
        default = f"`{show(d)}` (sac: `{show(s)}`)" if in_d and in_s and d != s else f"`{show(d if in_d else s)}`"
        only = "" if in_d == in_s else " (drqv2)" if in_d else " (sac)"
        cells = [f"`{dotted}`{only}", k.kind, k.unit, default, k.allowed, k.why]
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    rules = [f"- {words}" for words, _ in RULES + MACHINE_RULES]
    page = (CONFIG_DIR.parent / "docs" / "templates" / "configuration.md").read_text()
    return ("# Configuration\n\n<!-- generated by `python -m drq.config.schema --markdown > docs/configuration.md` "
            "from docs/templates/configuration.md; tests/test_config_schema.py checks it is up to date -->\n\n"
            + page.replace("{keys}", "\n".join(rows)).replace("{rules}", "\n".join(rules)))


if __name__ == "__main__":
    if sys.argv[1:] != ["--markdown"]:
        print("usage: python -m drq.config.schema --markdown > docs/configuration.md", file=sys.stderr)
        sys.exit(2)
    sys.stdout.write(markdown())
