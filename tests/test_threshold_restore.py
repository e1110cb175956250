"""A raised export deletion threshold is always put back: the journal owes it across a
kill, and plan and drift report a threshold other than the one wanted."""

import json

import pytest

from conftest import ROOT, plan_for
from providers.lab import scenario, store
from providers.lab.provider import LabTarget
from reconciler import drift
from reconciler.journal import last_interrupted
from test_faults import harness

REBUILD = ROOT / "desired-state" / "rebuild.toml"
FLAGS = ("--approve-irreversible", "--approve-threshold-raise", "--force")


def low_threshold_lab(path):
    lab = scenario.build(users=20)
    lab.set_deletion_threshold(10)  # 26 deletions (21 users, 5 groups, contacts, devices) are over it: the plan raises it to 36
    store.save(lab, path)


def journal_steps(case):
    lines = next(case.glob("*.journal")).read_text().splitlines()
    return [json.loads(line)["step"] for line in lines if json.loads(line)["event"] == "step-end"]


@pytest.mark.parametrize("boundary", [3, 5, 6, 9])
def test_a_kill_between_raise_and_restore_ends_with_the_threshold_back_after_resume(tmp_path, boundary):
    low_threshold_lab(tmp_path / "lab.json")
    killed = harness(tmp_path, f"boundary:{boundary}", "apply", REBUILD, "--auto-approve", *FLAGS)
    assert killed.returncode == -9, killed.stderr[-2000:]
    steps = journal_steps(tmp_path)
    assert "rebuild.threshold.raise" in steps and "threshold.restore" not in steps, steps
    assert store.load(tmp_path / "lab.json").server.deletion_threshold == 36
    assert last_interrupted(next(tmp_path.glob("*.journal"))).threshold_owed == 10
    resumed = harness(tmp_path, "none", "apply", REBUILD, "--resume", "--auto-approve", *FLAGS)
    assert resumed.returncode in (0, 4), resumed.stderr[-2000:]
    assert "Traceback" not in resumed.stderr
    lab = store.load(tmp_path / "lab.json")
    assert lab.server.deletion_threshold == 10, "put back"
    assert plan_for(REBUILD, LabTarget(lab)).steps == ()
    assert last_interrupted(next(tmp_path.glob("*.journal"))) is None


def test_plan_and_drift_report_a_threshold_other_than_the_default(lab, target):
    from reconciler.loader import load_desired

    lab.set_deletion_threshold(573)  # left raised
    desired = load_desired(ROOT / "desired-state" / "example.toml")
    plan = plan_for(desired, target)
    assert any(n.code == "threshold-differs" and "573, not the default 500" in n.message for n in plan.notices)
    report = drift.detect(desired, drift.observe_read_only(target.server, target.tenant, desired), "lab")
    assert any(i.what == "deletion threshold changed" for i in report.items) and report.exit_code == drift.EXIT_DRIFT


def test_a_desired_threshold_is_planned_and_a_raise_is_restored_to_it(lab, target):
    from attrs import evolve

    from reconciler.apply import apply_plan
    from reconciler.loader import load_desired

    lab.set_deletion_threshold(573)
    desired = load_desired(REBUILD)
    desired = evolve(desired, export=evolve(desired.export, deletion_threshold=500))
    plan = plan_for(desired, target)
    step = next(s for s in plan.steps if s.id == "threshold.set")
    assert step.before == {"threshold": 573} and step.after == {"threshold": 500} and step.approval is None
    assert not any(n.code == "threshold-differs" for n in plan.notices)
    assert apply_plan(plan, desired, target, approvals=frozenset({"irreversible"}), force=True).ok
    assert lab.server.deletion_threshold == 500



@pytest.mark.parametrize("failing", ["the export deletion threshold was put back", "the sync scheduler was resumed"])
def test_every_bracket_is_put_back_when_a_note_about_an_earlier_one_raises(tmp_path, failing):
    """Not only a provider's error: whatever the event callback raises while the brackets
    are put back (a console gone in a way nobody foresaw), the later brackets still run."""
    from reconciler.apply import apply_plan
    from reconciler.errors import ProviderError
    from reconciler.loader import load_desired
    from reconciler.operations import SetContainerScope

    low_threshold_lab(tmp_path / "lab.json")
    lab = store.load(tmp_path / "lab.json")
    target = LabTarget(lab)
    desired = load_desired(REBUILD)
    plan = plan_for(desired, target)
    server_apply, scopes = target.server.apply, []

    def apply(operation):
        if isinstance(operation, SetContainerScope):
            scopes.append(operation)
            if len(scopes) == 2:  # scope.containers: scheduler paused, threshold still raised
                raise ProviderError("lab", "scope", "refused for the test")
        return server_apply(operation)

    def on_event(event):
        if event.message.startswith(failing):
            raise RuntimeError("the console is gone")

    target.server.apply = apply
    with pytest.raises(RuntimeError, match="the console is gone"):
        apply_plan(plan, desired, target, on_event=on_event, approvals=frozenset(plan.approvals_needed), force=True)
    assert len(scopes) == 2
    assert lab.server.deletion_threshold == 10, "put back"
    assert lab.server.sync_cycle_enabled, "the scheduler is resumed whatever the callback raised"


def test_apply_reads_the_connector_space_counts_only_to_decide_not_to_check_each_step(tmp_path):
    """On a real server the counts are a paged Get-ADSyncCSObject over WinRM per AD connector:
    the plan reads them, and apply's re-observations (is a step already done? which users
    are in the bin?) must not read them again for every step."""
    from reconciler.apply import apply_plan
    from reconciler.loader import load_desired

    low_threshold_lab(tmp_path / "lab.json")
    lab = store.load(tmp_path / "lab.json")
    target = LabTarget(lab)
    desired = load_desired(REBUILD)
    plan = plan_for(desired, target)
    counted, connector_space = [], target.server.connector_space

    def counting(joins=False):
        counted.append(1)
        return connector_space(joins)

    target.server.connector_space = counting
    report = apply_plan(plan, desired, target, approvals=frozenset(plan.approvals_needed), force=True)
    assert report.ok
    assert len(plan.steps) > 10 and len(counted) <= 1, f"{len(counted)} passes over the connector space for {len(plan.steps)} steps"
