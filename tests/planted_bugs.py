"""Plant each one-token bug of docs/fidelity.md in a copy of this tree and check that the fast tests catch it.

    python tests/planted_bugs.py [--only NAME ...] [--tests PATH ...] [--list]

For each bug: copy the working tree (git's tracked and untracked-but-not-ignored files) to a temporary directory,
replace its one snippet in its file (the replacement must match exactly once, else the script stops: the code
moved and the bug must be re-planted), run ``pytest -q`` on the fast tests there (default: tests/test_transcription.py
tests/test_agents.py; a bug outside the agents names its own tests in :data:`OWN_TESTS`) and print one JSON line: ``{"bug", "file", "caught", "failed": [test ids], "seconds"}``.
Exit status 1 if any bug went uncaught (its tests all passed), 2 if a bug could not be planted, else 0.
Not collected by pytest (no ``test_`` prefix): it runs the suite itself, about a minute per bug on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FAST_TESTS = ["tests/test_transcription.py", "tests/test_agents.py"]
DRQV2, SAC, GYM = "drq/agents/drqv2.py", "drq/agents/sac.py", "drq/envs/gym_pixels.py"

# name -> (file, the code as it is, the code with the bug): one token changed (two arguments swapped for tau)
BUGS: dict[str, tuple[str, str, str]] = {
    "drqv2_critic_loss_q1_twice": (
        DRQV2, "F.mse_loss(q1, target_q) + F.mse_loss(q2, target_q)",
        "F.mse_loss(q1, target_q) + F.mse_loss(q1, target_q)"),
    "sac_critic_loss_q1_twice": (
        SAC, "F.mse_loss(q1, target_q_m) + F.mse_loss(q2, target_q_m)",
        "F.mse_loss(q1, target_q_m) + F.mse_loss(q1, target_q_m)"),
    "drqv2_next_obs_encoded_with_gradient": (
        DRQV2, "with torch.no_grad(), self.autocast():\n            next_features = self.encoder(next_obs_aug)",
        "with torch.enable_grad(), self.autocast():\n            next_features = self.encoder(next_obs_aug)"),
    "sac_next_obs_encoded_with_gradient": (
        SAC, "with torch.no_grad():\n            with self.autocast():\n                next_features = self.encoder(",
        "with torch.enable_grad():\n            with self.autocast():\n                next_features = self.encoder("),
    "drqv2_target_noise_clip_dropped": (
        DRQV2, 'next_dist.sample(clip=self.stddev_clip, eps=self.draw("next_action_eps"',
        'next_dist.sample(clip=None, eps=self.draw("next_action_eps"'),
    "drqv2_tau_on_the_online_critic": (
        DRQV2, "soft_update_(self.critic_target, self.critic, self.critic_target_tau)",
        "soft_update_(self.critic, self.critic_target, self.critic_target_tau)"),
    "sac_tau_on_the_online_critic": (
        SAC, "soft_update_(self.critic_target, self.critic, self.critic_target_tau)",
        "soft_update_(self.critic, self.critic_target, self.critic_target_tau)"),
    "sac_tau_on_the_online_encoder": (
        SAC, "soft_update_(self.target_encoder, self.encoder, self.critic_target_tau)",
        "soft_update_(self.encoder, self.target_encoder, self.critic_target_tau)"),
    "sac_alpha_loss_without_detach": (
        SAC, "(self.alpha * (-log_prob - self.target_entropy).detach()).mean()",
        "(self.alpha * (-log_prob - self.target_entropy)).mean()"),
    "sac_actor_steps_on_odd_updates": (
        SAC, "actor_step = step % self.actor_update_every_steps == 0",
        "actor_step = step % self.actor_update_every_steps == 1"),
    "gym_termination_bootstraps": (  # a Gymnasium termination read as a truncation: the critic bootstraps through it
        GYM, "discount, last = (0.0 if terminated else 1.0), True",
        "discount, last = (1.0 if terminated else 1.0), True"),
}
# bugs outside the agents, with the tests that must catch them (instead of --tests)
OWN_TESTS: dict[str, list[str]] = {"gym_termination_bootstraps": ["tests/test_gym_episode_ends.py"]}


def tree_files(root: Path) -> list[str]:
    """The working tree as git sees it: tracked files and untracked files that are not ignored."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                         check=True, capture_output=True).stdout
    return [f for f in out.decode().split("\0") if f and (root / f).is_file()]


def copy_tree(root: Path, dest: Path) -> None:
    for name in tree_files(root):
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / name, target)


def plant(dest: Path, file: str, good: str, bad: str) -> None:
    path = dest / file
    text = path.read_text()
    count = text.count(good)
    if count != 1:
        print(f"planted_bugs.py: {file}: the snippet {good!r} occurs {count} times, not once; re-plant this bug "
              "against the current code", file=sys.stderr)
        sys.exit(2)
    path.write_text(text.replace(good, bad))


def run_bug(name: str, tests: list[str]) -> dict:
    file, good, bad = BUGS[name]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"planted_{name}_") as tmp:
        dest = Path(tmp)
        copy_tree(ROOT, dest)
        plant(dest, file, good, bad)
        env = dict(os.environ, PYTHONPATH=str(dest), PYTHONDONTWRITEBYTECODE="1")
        tests = OWN_TESTS.get(name, tests)
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rf", *tests],
                              cwd=dest, env=env, capture_output=True, text=True)
    failed = sorted(set(re.findall(r"^FAILED (\S+)", proc.stdout, flags=re.M)))
    if proc.returncode not in (0, 1):  # 2..5: interrupted, internal error, usage error, nothing collected
        failed = failed or [f"pytest exit {proc.returncode}: {proc.stdout.strip().splitlines()[-1:]}"]
    return {"bug": name, "file": file, "caught": proc.returncode != 0, "failed": failed,
            "seconds": round(time.perf_counter() - start, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=sorted(BUGS), help="plant only these bugs")
    parser.add_argument("--tests", nargs="+", default=FAST_TESTS, help="the test files to run (default: %(default)s)")
    parser.add_argument("--list", action="store_true", help="print the bugs and exit")
    args = parser.parse_args(argv)
    if args.list:
        for name, (file, good, bad) in BUGS.items():
            print(json.dumps({"bug": name, "file": file, "from": good, "to": bad}))
        return 0
    uncaught = []
    for name in args.only or list(BUGS):
        result = run_bug(name, args.tests)
        print(json.dumps(result), flush=True)
        if not result["caught"]:
            uncaught.append(name)
    if uncaught:
        print(f"planted_bugs.py: not caught: {', '.join(uncaught)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
