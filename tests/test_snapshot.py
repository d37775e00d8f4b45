"""Snapshots: weights_only-loadable, atomic, clear errors; RNG states round-trip exactly."""

from __future__ import annotations

import errno
import pickle
import random

import numpy as np
import pytest
import torch

from drq.run import snapshot


def test_rng_states_round_trip_through_a_weights_only_file(tmp_path):
    random.seed(3), np.random.seed(4), torch.manual_seed(5)
    random.gauss(0, 1)  # leaves a cached gaussian in python's state
    np.random.standard_normal()  # and one in numpy's
    assert snapshot.save(tmp_path / "s.pt", {"rng": snapshot.capture_rng()})
    expected = ([random.random() for _ in range(3)], random.gauss(0, 1), np.random.standard_normal(5),
                np.random.randint(0, 1000, 5), torch.rand(5))  # fmt: skip
    random.seed(0), np.random.seed(0), torch.manual_seed(0)
    state = torch.load(tmp_path / "s.pt", weights_only=True)
    snapshot.restore_rng(state["rng"])
    got = ([random.random() for _ in range(3)], random.gauss(0, 1), np.random.standard_normal(5),
           np.random.randint(0, 1000, 5), torch.rand(5))  # fmt: skip
    assert got[0] == expected[0] and got[1] == expected[1]
    np.testing.assert_array_equal(got[2], expected[2])
    np.testing.assert_array_equal(got[3], expected[3])
    assert torch.equal(got[4], expected[4])


def test_load_returns_what_was_saved(tmp_path):
    state = {"agent": {"w": torch.arange(6.0).reshape(2, 3), "opt": {"step": torch.tensor(3.0), "lr": 1e-4}},
             "counters": {"frame": 1000}, "config": {"task_name": "walker_walk", "tags": ["a"]}}  # fmt: skip
    assert snapshot.save(tmp_path / "snapshot.pt", state)
    loaded = snapshot.load(tmp_path)  # a run dir resolves to its snapshot.pt
    assert loaded["format"] == snapshot.FORMAT
    assert torch.equal(loaded["agent"]["w"], state["agent"]["w"]) and loaded["counters"] == {"frame": 1000}
    assert loaded["config"] == state["config"]


def test_failed_write_keeps_the_previous_snapshot(tmp_path, monkeypatch):
    path = tmp_path / "snapshot.pt"
    assert snapshot.save(path, {"counters": {"frame": 1}})
    before = path.read_bytes()

    def full(obj, f, *args, **kwargs):
        f.write(b"half a snapshot")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.warns(RuntimeWarning, match="disk full.*previous snapshot is kept"):
        assert snapshot.save(path, {"counters": {"frame": 2}}) is False
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["snapshot.pt"]  # no temp file left


class NotAllowed:
    pass


@pytest.mark.parametrize(
    "content, match",
    [
        (b"", "corrupt"),
        (b"garbage bytes", "corrupt"),
        (pickle.dumps(NotAllowed(), protocol=2), "corrupt"),  # a pickled object: refused by weights_only
    ],
    ids=["empty", "garbage", "pickled-object"],
)
def test_unusable_files_raise_one_clear_error(tmp_path, content, match):
    (tmp_path / "snapshot.pt").write_bytes(content)
    with pytest.raises(snapshot.SnapshotError, match=match) as info:
        snapshot.load(tmp_path / "snapshot.pt")
    assert str(tmp_path / "snapshot.pt") in str(info.value) and "\n" not in str(info.value)


def test_wrong_format_and_missing_file(tmp_path):
    torch.save({"agent": {}}, tmp_path / "old.pt")
    with pytest.raises(snapshot.SnapshotError, match="format None"):
        snapshot.load(tmp_path / "old.pt")
    with pytest.raises(snapshot.SnapshotError, match="no snapshot at"):
        snapshot.load(tmp_path / "missing.pt")


def test_check_compatible_names_each_difference():
    state = {"config": {"task_name": "walker_walk", "agent": {"name": "sac"}, "frame_stack": 3}}
    now = {"task_name": "walker_walk", "agent": {"name": "drqv2"}, "frame_stack": 3}
    snapshot.check_compatible(state, state["config"], ("task_name", "agent.name"), "p")
    with pytest.raises(snapshot.SnapshotError, match="agent.name: snapshot 'sac', now 'drqv2'"):
        snapshot.check_compatible(state, now, ("task_name", "agent.name", "frame_stack"), "p")
