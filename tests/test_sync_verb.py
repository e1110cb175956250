"""Issue 16: `syncprep sync` starts a cycle through the provider apply uses, waits for it with
the same checks, and takes the same lock."""

import pytest

from conftest import EXAMPLE, FIGURES
from providers.lab import scenario
from providers.lab.provider import LabTarget, LabTenant
from providers.lab.world import iso_to_minute
from reconciler.apply import Status
from reconciler.journal import Journal, LockedError, TargetLock
from reconciler.loader import load_desired
from reconciler.model import SyncPolicy
from reconciler.provider import Target
from reconciler.sync import run_sync, sync_plan


def _profiles_since(lab, minute):
    return sorted((r.connector, r.profile, r.result) for r in lab.server.run_history if iso_to_minute(r.started) >= minute)


@pytest.mark.parametrize("policy", [SyncPolicy.INITIAL, SyncPolicy.DELTA])
def test_a_sync_on_demand_runs_one_cycle_of_the_policy_in_process(policy):
    lab = scenario.build("default")
    desired = load_desired(EXAMPLE)
    start = lab.clock
    report = run_sync(sync_plan(policy, desired, "lab"), desired, LabTarget(lab))
    assert [r.status for r in report.results] == [Status.DONE]
    full = "Full" if policy is SyncPolicy.INITIAL else "Delta"
    assert (lab.ad_connector().name, f"{full} Synchronization", "success") in _profiles_since(lab, start)
    assert report.outcomes == (), "no licence is decided after a sync on demand"
    assert all(len(u.licenses) <= 1 for u in lab.active_cloud_users()), "nothing licensed"


def test_a_sync_on_demand_through_the_psrp_provider_finds_its_cycle_by_watermark_and_fails_a_stopped_run(served):
    lab = scenario.build("default", users=8)
    ad = lab.ad_connector()
    lab.set_container_scope(ad.included_containers, (*ad.excluded_containers, scenario.HYBRID_OU))
    lab.set_deletion_threshold(3)  # 9 users leave the scope: the export stops at the threshold
    lab, _endpoint, server = served(lab=lab)
    desired = load_desired(EXAMPLE)
    target = Target(server, LabTenant(lab))
    report = run_sync(sync_plan(SyncPolicy.INITIAL, desired, "served"), desired, target)
    (result,) = report.results
    assert result.status is Status.FAILED and "stopped-deletion-threshold-exceeded" in result.detail
    lab.set_deletion_threshold(500)
    report = run_sync(sync_plan(SyncPolicy.INITIAL, desired, "served"), desired, target)
    assert [r.status for r in report.results] == [Status.DONE] and "all runs succeeded" in report.results[0].detail


def test_a_sync_on_demand_takes_the_apply_lock_and_journals(tmp_path):
    lock_path, journal_path = tmp_path / "t.lock", tmp_path / "t.journal"
    desired = load_desired(EXAMPLE)
    with TargetLock(lock_path, "apply desired.toml"):
        with pytest.raises(LockedError):
            with TargetLock(lock_path, "sync desired.toml"):
                pass
    lab = scenario.build("default")
    journal = Journal(journal_path)
    run_sync(sync_plan(SyncPolicy.DELTA, desired, "lab"), desired, LabTarget(lab), journal=journal)
    assert journal.last_interrupted() is None and "sync.on-demand" in journal_path.read_text()


def test_syncprep_sync_runs_the_cycle_through_lab_serve_and_waits_for_it(tmp_path):
    from test_serve import SECRETS, _serve, remote_file, run

    for tmp, env, graph, port, _text in _serve(tmp_path):
        desired = remote_file(tmp, graph, port)
        done = run(env, tmp, "sync", desired, "--policy", "Initial")
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        assert "Initial cycle" in done.stdout and "all runs succeeded" in done.stdout
        delta = run(env, tmp, "sync", desired, "--policy", "delta")
        assert delta.returncode == 0 and "Delta cycle" in delta.stdout, delta.stdout[-2000:] + delta.stderr[-2000:]
        assert not any(v in out for v in SECRETS.values() for out in (done.stdout, done.stderr, delta.stdout))


def test_syncprep_sync_refuses_while_a_killed_apply_is_owed_a_resume(tmp_path, monkeypatch):
    from reconciler.cli.command import main
    from reconciler.journal import Journal, target_slug

    monkeypatch.chdir(tmp_path)
    lab_file = tmp_path / "lab.json"
    assert main(["lab", "init", "--lab", str(lab_file)]) == 0
    from providers.lab.provider import open_lab_target

    target = open_lab_target(lab_file)
    journal = Journal(target.state_dir() / f"{target_slug(target.key)}.journal")
    journal.start("x", "apply", ["scheduler.pause"])
    journal.step_started("scheduler.pause")
    journal.step_ended("scheduler.pause", "done", scheduler_paused=True)
    before = lab_file.read_bytes()
    assert main(["sync", str(EXAMPLE), "--lab", str(lab_file)]) == 1
    assert lab_file.read_bytes() == before, "no cycle was started"


# ---------------------------------------------------------------------------- a killed sync (review 2, finding 8)


def _killed_sync(tmp_path, point):
    from test_faults import fresh_lab, harness

    fresh_lab(tmp_path / "lab.json")
    killed = harness(tmp_path, point, "sync", EXAMPLE)
    assert killed.returncode == -9, (point, killed.stdout[-2000:], killed.stderr[-2000:])
    FIGURES["faults injected"] += 1
    return tmp_path / "lab.json"


def _ops(tmp_path):
    from test_faults import oplog

    return [op["op"] for op in oplog(tmp_path)]


def _left_clean(tmp_path):
    """No lock left, the journal's last run finished, the scheduler on."""
    from providers.lab import store

    assert not list(tmp_path.glob("*.lock")), "the lock is released"
    (journal_path,) = tmp_path.glob("*.journal")
    assert Journal(journal_path).last_interrupted() is None, "the journal's last run is closed"
    assert store.load(tmp_path / "lab.json").server.sync_cycle_enabled


# before: journalled as started, nothing done; inside: the cycle ran and was saved, the engine
# never heard of it; boundary: journalled done, killed before the run's end and the lock's release.
@pytest.mark.parametrize("point", ["before:1", "inside:1", "boundary:1"])
def test_a_killed_sync_is_finished_by_sync_resume_which_runs_only_its_cycle_again(tmp_path, cli, point):
    from test_faults import harness

    lab_path = _killed_sync(tmp_path, point)
    code, _out, err = cli("plan", EXAMPLE, "--lab", lab_path)
    assert "the last sync (run" in err and "'syncprep sync --resume' runs its cycle again" in err and "apply --resume" not in err, err
    code, _out, err = cli("sync", EXAMPLE, "--lab", lab_path)
    assert code == 1 and "'syncprep sync --resume' takes over" in err, err
    done_before = len(_ops(tmp_path))
    resumed = harness(tmp_path, "none", "sync", EXAMPLE, "--resume")
    FIGURES["runs resumed"] += 1
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    assert "took over the lock" in resumed.stderr and "this sync runs the cycle again" in resumed.stderr
    assert "Initial cycle" in resumed.stdout and "Traceback" not in resumed.stderr
    assert _ops(tmp_path)[done_before:] == ["RunSyncCycle"], "one cycle again, and nothing else (no rule, scheduler or licence)"
    _left_clean(tmp_path)
    code, _out, err = cli("plan", EXAMPLE, "--lab", lab_path)
    assert "interrupted" not in err, err
    assert cli("sync", EXAMPLE, "--lab", lab_path, "--policy", "Delta")[0] == 0
    assert cli("sync", EXAMPLE, "--lab", lab_path, "--resume")[1] == "Nothing to resume: no sync on this target was cut short.\n"


def test_sync_resume_runs_the_killed_sync_s_own_policy(tmp_path):
    from test_faults import fresh_lab, harness

    fresh_lab(tmp_path / "lab.json")
    assert harness(tmp_path, "boundary:1", "sync", EXAMPLE, "--policy", "Delta").returncode == -9
    resumed = harness(tmp_path, "none", "sync", EXAMPLE, "--resume")
    assert resumed.returncode == 0 and "Delta cycle" in resumed.stdout, resumed.stdout[-2000:] + resumed.stderr[-2000:]


def test_apply_resume_after_a_killed_sync_applies_nothing_and_releases_the_lock(tmp_path, cli):
    from test_faults import harness

    lab_path = _killed_sync(tmp_path, "inside:1")
    before, done_before = lab_path.read_bytes(), len(_ops(tmp_path))
    resumed = harness(tmp_path, "none", "apply", EXAMPLE, "--resume", "--auto-approve")
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    assert "Nothing to resume for apply: the last sync (run" in resumed.stdout and "sync --resume" in resumed.stdout
    assert _ops(tmp_path)[done_before:] == [] and lab_path.read_bytes() == before, "no rule deleted, no licence touched"
    assert not list(tmp_path.glob("*.lock")), "the dead sync's lock is released"


def test_sync_resume_never_takes_over_a_killed_apply_s_lock(tmp_path, cli):
    from test_faults import fresh_lab, harness

    fresh_lab(tmp_path / "lab.json")
    assert harness(tmp_path, "boundary:2", "apply", EXAMPLE, "--auto-approve").returncode == -9
    FIGURES["faults injected"] += 1
    (lock,) = tmp_path.glob("*.lock")
    held, before = lock.read_bytes(), (tmp_path / "lab.json").read_bytes()
    code, _out, err = cli("sync", EXAMPLE, "--lab", tmp_path / "lab.json", "--resume")
    assert code == 1 and "the last apply (run" in err and "finish it with 'syncprep apply --resume' first; no cycle was started" in err, err
    assert lock.read_bytes() == held and (tmp_path / "lab.json").read_bytes() == before
    code, _out, err = cli("sync", EXAMPLE, "--lab", tmp_path / "lab.json")
    assert code == 1 and "'syncprep apply --resume' takes over" in err, err


def test_a_sync_journalled_before_runs_had_kinds_is_known_by_its_step():
    from reconciler.journal import Interrupted
    from reconciler.sync import is_sync_run, policy_of

    legacy = Interrupted("r", "2026-12-04T20:00:00Z", "sync.on-demand", False, "apply")
    assert is_sync_run(legacy) and policy_of(legacy) is SyncPolicy.INITIAL
    assert not is_sync_run(Interrupted("r", "2026-12-04T20:00:00Z", "sync.initial", False, "apply"))
    assert policy_of(Interrupted("r", "2026-12-04T20:00:00Z", "sync.on-demand", False, "sync Delta")) is SyncPolicy.DELTA
    assert not is_sync_run(Interrupted("r", "2026-12-04T20:00:00Z", None, False, None)), "a journal whose run-start was torn"


def test_a_sync_resume_killed_in_turn_is_resumed_too(tmp_path):
    from test_faults import harness

    _killed_sync(tmp_path, "boundary:1")
    again = harness(tmp_path, "inside:1", "sync", EXAMPLE, "--resume")
    assert again.returncode == -9, again.stderr[-2000:]
    FIGURES["faults injected"] += 1
    done_before = len(_ops(tmp_path))
    resumed = harness(tmp_path, "none", "sync", EXAMPLE, "--resume")
    assert resumed.returncode == 0 and "took over the lock" in resumed.stderr, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    assert _ops(tmp_path)[done_before:] == ["RunSyncCycle"]
    _left_clean(tmp_path)


def test_sync_resume_with_no_sync_cut_short_starts_no_cycle(tmp_path, cli):
    from test_faults import fresh_lab

    fresh_lab(tmp_path / "lab.json")
    before = (tmp_path / "lab.json").read_bytes()
    code, out, _err = cli("sync", EXAMPLE, "--lab", tmp_path / "lab.json", "--resume")
    assert code == 0 and out == "Nothing to resume: no sync on this target was cut short.\n"
    assert (tmp_path / "lab.json").read_bytes() == before and not list(tmp_path.glob("*.lock"))
