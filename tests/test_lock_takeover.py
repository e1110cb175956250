"""Taking over a dead apply's lock is atomic: of several ``--resume`` runs started
together, exactly one holds the lock. Run in parallel processes, many times."""

import json
import multiprocessing
import os
import socket

import pytest

from reconciler.journal import LockedError, TargetLock, read_lock

TRIALS = 100
TAKERS = 5


def _dead_pid():
    ctx = multiprocessing.get_context("fork")
    child = ctx.Process(target=lambda: None)
    child.start()
    child.join()
    return child.pid  # gone now; pids are not reused this quickly


def _taker(path, start, tried, results):
    lock = TargetLock(path, "apply --resume", take_over_dead=True)
    start.wait()
    try:
        with lock:
            results.put(("held", lock.id))
            # Hold the lock until every other taker has tried, so a taker that
            # wrongly succeeds does so while this one still believes it holds it.
            tried.wait()
            if (read_lock(path) or {}).get("id") != lock.id:
                results.put(("lost", lock.id))
    except LockedError:
        results.put(("refused", lock.id))
        tried.wait()


def test_five_concurrent_take_overs_leave_exactly_one_holder(tmp_path):
    ctx = multiprocessing.get_context("fork")
    dead = _dead_pid()
    failures = []
    for trial in range(TRIALS):
        path = tmp_path / f"trial{trial}" / "target.lock"
        path.parent.mkdir()
        path.write_text(json.dumps({"id": f"dead{trial}", "pid": dead, "host": socket.gethostname(), "user": "x", "since": "", "command": "apply"}))
        start, tried, results = ctx.Barrier(TAKERS), ctx.Barrier(TAKERS), ctx.Queue()
        takers = [ctx.Process(target=_taker, args=(path, start, tried, results)) for _ in range(TAKERS)]
        for p in takers:
            p.start()
        for p in takers:
            p.join(60)
        outcomes = [results.get(timeout=5) for _ in range(TAKERS)]
        while not results.empty():
            outcomes.append(results.get())
        held = [o for o in outcomes if o[0] == "held"]
        if len(held) != 1 or any(o[0] == "lost" for o in outcomes):
            failures.append((trial, outcomes))
        assert not path.exists(), "the holder released the lock"
        assert (path.parent / "target.lock.dead-dead{}".format(trial)).exists(), "the dead lock is kept for the record"
    assert not failures, f"{len(failures)} of {TRIALS} trials did not end with exactly one holder: {failures[:3]}"


def test_a_live_lock_is_never_taken_over(tmp_path):
    path = tmp_path / "target.lock"
    with TargetLock(path, "apply"):
        with pytest.raises(LockedError, match="another apply holds the lock"):
            TargetLock(path, "apply --resume", take_over_dead=True).__enter__()
    assert not path.exists()


def test_the_lock_file_is_never_seen_half_written(tmp_path):
    path = tmp_path / "target.lock"
    with TargetLock(path, "apply") as lock:
        assert read_lock(path)["id"] == lock.id and read_lock(path)["pid"] == os.getpid()
        assert [p.name for p in tmp_path.iterdir()] == ["target.lock"], "no staging file is left behind"
