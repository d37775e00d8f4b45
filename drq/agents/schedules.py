"""Scalar schedules written as strings, e.g. DrQ-v2's exploration std ``'linear(1.0,0.1,500000)'``.

The clock is **agent steps** (not frames): the trainer converts frames to agent steps once, the agents evaluate
schedules at agent steps. Valid forms (spaces are allowed, numbers may use exponents such as ``5e5``):

- ``'0.2'`` or a plain number ``0.2``: a constant.
- ``'linear(init,final,duration)'``: ``init`` at step 0, moving linearly to ``final`` at step ``duration``, then
  constant.
- ``'step_linear(init,final1,duration1,final2,duration2)'``: ``init -> final1`` linearly over the first
  ``duration1`` steps, then ``final1 -> final2`` over the next ``duration2`` steps, then constant.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Schedule", "parse_schedule", "VALID_FORMS"]

VALID_FORMS = ("a number, e.g. '0.2'", "'linear(init,final,duration)'",
               "'step_linear(init,final1,duration1,final2,duration2)'")

_NUMBER = r"\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*"
_PATTERNS = {
    "linear": re.compile(rf"^\s*linear\({_NUMBER},{_NUMBER},{_NUMBER}\)\s*$"),
    "step_linear": re.compile(rf"^\s*step_linear\({_NUMBER},{_NUMBER},{_NUMBER},{_NUMBER},{_NUMBER}\)\s*$"),
}


@dataclass(frozen=True)
class Schedule:
    """A piecewise-linear schedule over agent steps: ``points`` are ``(step, value)`` knots, constant outside.

    ``spec`` is the string it was parsed from. Call it with an agent step (int) to get a Python float.
    """

    spec: str
    points: tuple[tuple[float, float], ...]

    def __call__(self, step: int) -> float:
        """Value at agent step ``step`` (a Python float; no tensors involved)."""
        pts = self.points
        if step <= pts[0][0]:
            return pts[0][1]
        for (s0, v0), (s1, v1) in zip(pts[:-1], pts[1:]):
            if step <= s1:
                mix = (step - s0) / (s1 - s0)
                return (1.0 - mix) * v0 + mix * v1
        return pts[-1][1]

    @property
    def min_value(self) -> float:
        """Smallest value the schedule ever takes (the minimum over its knots)."""
        return min(v for _, v in self.points)


def _invalid(spec: object, why: str = "") -> ValueError:
    extra = f" ({why})" if why else ""
    return ValueError(f"unknown schedule {spec!r}{extra}; valid forms: " + ", ".join(VALID_FORMS))


def parse_schedule(spec: str | float | int | Schedule) -> Schedule:
    """Parse ``spec`` (see the module docstring) into a ``Schedule``; raise ValueError naming it if it is invalid."""
    if isinstance(spec, Schedule):
        return spec
    if isinstance(spec, bool) or not isinstance(spec, (str, int, float)):
        raise _invalid(spec, f"got a {type(spec).__name__}")
    if isinstance(spec, (int, float)):
        return Schedule(str(spec), ((0.0, float(spec)),))
    try:
        value = float(spec)
    except ValueError:
        pass
    else:
        return Schedule(spec, ((0.0, value),))
    match = _PATTERNS["linear"].match(spec)
    if match:
        init, final, duration = (float(g) for g in match.groups())
        if not duration > 0:
            raise _invalid(spec, f"duration must be > 0, got {duration!r}")
        return Schedule(spec, ((0.0, init), (duration, final)))
    match = _PATTERNS["step_linear"].match(spec)
    if match:
        init, final1, duration1, final2, duration2 = (float(g) for g in match.groups())
        if not (duration1 > 0 and duration2 > 0):
            raise _invalid(spec, f"durations must be > 0, got {duration1!r} and {duration2!r}")
        return Schedule(spec, ((0.0, init), (duration1, final1), (duration1 + duration2, final2)))
    raise _invalid(spec)
