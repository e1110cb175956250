"""The ``server`` backend end to end: ``lab serve`` is the Entra Connect server, and syncprep
runs from two working directories (two checkouts, two runners) in separate processes."""

import re
import shutil

import pytest

from faults import harness as faults_harness
from test_serve import REAL_PROVIDERS, _serve, remote_file, run


@pytest.fixture
def served(tmp_path):
    yield from _serve(tmp_path)


def _checkouts(tmp_path, graph, port):
    """The same desired-state file in two working directories."""
    desired = remote_file(tmp_path, graph, port)
    dirs = []
    for name in ("checkout-a", "checkout-b"):
        folder = tmp_path / name
        folder.mkdir()
        shutil.copy(desired, folder / "remote.toml")
        dirs.append(folder)
    return dirs


def _harness(env, cwd, ops, kill, *args):
    return faults_harness.run_forked(ops, kill, args, cwd=cwd, env=env, timeout=300)


def test_two_applies_from_two_working_directories_exactly_one_runs(served):
    tmp_path, env, graph, port, _text = served
    a, b = _checkouts(tmp_path, graph, port)
    env = {**env, "SYNCPREP_FAULT_CLASSES": REAL_PROVIDERS, "SYNCPREP_FAULT_LAB": str(tmp_path / "lab.json")}
    ops = tmp_path / "ops.jsonl"
    # Two processes at once, forked from this one as _harness forks one (two new interpreters cost 1-2 s of CPU).
    apply = {"oplog_path": ops, "kill": "none", "args": ["apply", "remote.toml", "--auto-approve"], "env": env}
    results = [(done.returncode, done.stdout, done.stderr) for done in faults_harness.run_forked_together([{**apply, "cwd": a}, {**apply, "cwd": b}], timeout=300)]
    codes = sorted(code for code, _out, _err in results)
    # One applies (4: two users end without a licence); the other is refused the lock
    # (1), or comes after it and finds nothing left to do (0).
    assert codes in ([0, 4], [1, 4]), results
    for code, _out, err in results:
        if code == 1:
            assert "another apply holds the lock" in err and "(server)" in err, err
    assert max(faults_harness.licence_changes(ops).values()) == 1, "no change made twice"
    assert sum("Apply complete" in out for _code, out, _err in results) == 1, "exactly one apply ran"
    # Nothing was kept in either working directory: the lock and journal are on the server.
    assert not (a / ".syncprep").exists() and not (b / ".syncprep").exists()
    assert run(env, b, "plan", "remote.toml", "--detailed-exitcode").returncode == 0


@pytest.mark.parametrize("how", ["resume-takes-over", "force-unlock"])
def test_a_killed_apply_is_reported_abandoned_and_resumed_from_another_working_directory(served, how):
    tmp_path, env, graph, port, _text = served
    a, b = _checkouts(tmp_path, graph, port)
    env = {**env, "SYNCPREP_FAULT_CLASSES": REAL_PROVIDERS, "SYNCPREP_FAULT_LAB": str(tmp_path / "lab.json")}
    ops = tmp_path / "ops.jsonl"
    killed = _harness(env, a, ops, "boundary:3", "apply", "remote.toml", "--auto-approve")
    assert killed.returncode == -9, killed.stdout[-2000:] + killed.stderr[-2000:]
    # The other checkout sees the interrupted run: the journal is on the server.
    plan = run(env, b, "plan", "remote.toml")
    assert "was interrupted" in plan.stderr and "paused the sync scheduler" in plan.stderr, plan.stderr
    refused = run(env, b, "apply", "remote.toml", "--auto-approve")
    assert refused.returncode == 1 and "the lock is abandoned" in refused.stderr and "never taken silently" in refused.stderr, refused.stderr
    lock_id = re.search(r"id ([0-9a-f]{8}),", refused.stderr).group(1)
    if how == "force-unlock":
        asked = run(env, b, "force-unlock", lock_id, "remote.toml")
        assert asked.returncode == 1 and "needs confirmation" in asked.stderr and "force-unlock breaks the lock" in asked.stderr
        released = run(env, b, "force-unlock", lock_id, "remote.toml", "--yes")
        assert released.returncode == 0 and f"Released lock id {lock_id}" in released.stdout, released.stderr
    resumed = _harness(env, b, ops, "none", "apply", "remote.toml", "--resume", "--auto-approve")
    assert resumed.returncode == 4, resumed.stdout[-3000:] + resumed.stderr[-2000:]
    if how == "resume-takes-over":
        assert f"took over the lock {lock_id}" in resumed.stderr
    assert "was interrupted" in resumed.stderr
    assert max(faults_harness.licence_changes(ops).values()) == 1, "no change made twice"
    assert run(env, a, "plan", "remote.toml", "--detailed-exitcode").returncode == 0
