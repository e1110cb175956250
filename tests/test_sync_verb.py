"""Issue 16: `syncprep sync` starts a cycle through the provider apply uses, waits for it with
the same checks, and takes the same lock."""

import pytest

from conftest import EXAMPLE
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
