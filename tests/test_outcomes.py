"""Licences only where they create a mailbox; the reviewed plan is the contract; per-user outcomes."""

import pytest

from conftest import EXAMPLE, plan_for
from providers.lab import scenario
from providers.lab.provider import LabTarget
from reconciler.apply import Status, apply_plan
from reconciler.loader import load_desired, loads_desired


def test_the_lab_target_refuses_a_server_in_staging_mode_like_the_real_one(lab):
    lab.server.staging_mode = True
    rules_before = list(lab.server.rules)
    target = LabTarget(lab)
    desired = load_desired(EXAMPLE)
    report = apply_plan(plan_for(desired, target), desired, target)
    failed = [r for r in report.results if r.status is Status.FAILED]
    assert failed and "staging mode" in failed[0].detail and "allow_staging" in failed[0].detail
    assert lab.server.rules == rules_before and lab.server.sync_cycle_enabled


def test_allow_staging_lets_the_lab_target_change_a_staging_server(tmp_path):
    lab = scenario.build("default", users=4)
    lab.server.staging_mode = True
    desired = loads_desired('[target]\nallow_staging = true\n[scheduler]\nsync_cycle_enabled = false\n')
    assert desired.target.allow_staging
    from providers.factory import open_target
    from providers.lab import store

    path = tmp_path / "lab.json"
    store.save(lab, path)
    target = open_target(desired.target, lab_path=path)
    report = apply_plan(plan_for(desired, target), desired, target)
    assert report.ok and not target.lab.server.sync_cycle_enabled
    with pytest.raises(Exception, match="allow_staging"):
        loads_desired('[target]\nkind = "remote"\nallow_staging = true\n[target.graph]\n[target.entra_connect]\nhost = "h"\n')
