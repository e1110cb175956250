"""Solution 2 never destroys a mailbox nor purges the wrong object: each test is a lab
starting point that loses data on a purge without the rail."""

from pathlib import Path

from attrs import evolve

from conftest import ROOT, plan_for
from providers.lab import scenario
from providers.lab.provider import LabTarget
from reconciler.apply import apply_plan
from reconciler.loader import load_desired

REBUILD = ROOT / "desired-state" / "rebuild.toml"
HYBRID = {f"user{i:02d}@contoso.com" for i in range(1, 21)} | {"contractor01@contoso.com"}
APPROVED = frozenset({"irreversible"})


def rebuild(**purge_changes):
    desired = load_desired(REBUILD)
    return evolve(desired, purge=evolve(desired.purge, **purge_changes)) if purge_changes else desired


def mailboxes(lab):
    return {u.upn: u.id for u in lab.active_cloud_users() if lab.mailbox_state(u) == "present" and u.synced}


def test_mailbox_owners_and_already_clean_users_are_kept_out_of_the_purge():
    lab = scenario.build("already-prepared")
    target = LabTarget(lab)
    before = mailboxes(lab)
    assert len(before) == 19
    desired = rebuild()
    plan = plan_for(desired, target)
    assert not any(s.id == "purge" for s in plan.steps)
    kept = dict(plan.purge_kept)
    assert set(kept) == HYBRID
    assert {u for u, why in kept.items() if "destroys their Exchange Online mailbox" in why} == set(before)
    assert {u for u, why in kept.items() if "already clear" in why} == {"user07@contoso.com", "user20@contoso.com"}
    assert plan.counts()["kept_from_purge"] == 21
    notices = [n.message for n in plan.notices if n.code == "purge-kept"]
    assert any(n.startswith("19 user(s) kept out of the purge") and "user05@contoso.com" in n for n in notices)
    report = apply_plan(plan, desired, target, approvals=APPROVED, force=True)
    assert report.ok, report.results
    assert mailboxes(lab) == before, "every mailbox is still there, on the same object"
    assert not any(u.deleted_at is not None for u in lab.cloud_users)


def test_an_acknowledged_mailbox_owner_is_purged_and_the_banner_says_what_is_lost(cli):
    code, out, _ = cli("lab", "init", "--scenario", "already-prepared")
    assert code == 0
    code, out, err = cli("plan", REBUILD, "--no-color")
    assert code == 0, err
    assert "kept out of the purge" in out and "IRREVERSIBLE" not in out.split("Notices")[0]
    acknowledged = REBUILD.read_text().replace("max_count = 25", 'max_count = 25\nacknowledge_loss = ["user05@contoso.com"]')
    Path("ack.toml").write_text(acknowledged)  # in the CLI's working directory
    code, out, err = cli("plan", "ack.toml", "--no-color")
    assert code == 0, err
    banner = out.split("msExchMailboxGuid for existing objects")[0]
    assert "permanently deletes 1 user(s)" in banner
    assert "lost: user05@contoso.com: the purge destroys their Exchange Online mailbox" in banner
    assert "20 user(s) kept out of the purge" in out


def test_acknowledged_purge_applies_to_that_user_only():
    lab = scenario.build("already-prepared")
    target = LabTarget(lab)
    before = mailboxes(lab)
    desired = rebuild(acknowledge_loss=("user05@contoso.com",))
    plan = plan_for(desired, target)
    purge = next(s for s in plan.steps if s.id == "purge")
    assert [u.upn for u in purge.operation.users] == ["user05@contoso.com"]
    assert plan.purge_losses == (("user05@contoso.com", "the purge destroys their Exchange Online mailbox"),)
    report = apply_plan(plan, desired, target, approvals=APPROVED | {"threshold-raise"}, force=True)
    assert report.ok, report.results
    after = mailboxes(lab)
    assert lab.cloud_user("user05@contoso.com").id != before["user05@contoso.com"], "re-created"
    del before["user05@contoso.com"]
    assert {u: i for u, i in after.items() if u in before} == before, "the others keep their mailbox and object"


def test_duplicate_upns_in_the_recycle_bin_are_each_purged_by_id():
    lab = scenario.build("duplicate-upn-in-bin")
    target = LabTarget(lab)
    old = next(u for u in lab.cloud_users if u.deleted_at is not None)
    current = lab.cloud_user("user05@contoso.com")
    desired = rebuild()
    plan = plan_for(desired, target)
    purge = next(s for s in plan.steps if s.id == "purge")
    assert len(purge.operation.users) == 22
    assert {r.id for r in purge.operation.users if r.upn == "user05@contoso.com"} == {old.id, current.id}
    report = apply_plan(plan, desired, target, approvals=APPROVED, force=True)
    assert report.ok, report.results
    ids = {u.id for u in lab.cloud_users}
    assert old.id not in ids and current.id not in ids, "both objects of user05 are gone"
    assert lab.cloud_user("user05@contoso.com").mailbox_guid is None
    assert not any(u.deleted_at is not None for u in lab.cloud_users)
    assert plan_for(desired, target).steps == ()


# ---------------------------------------------------------------------------- an unreadable recycle bin

DELETED_ROUTE = "GET /directory/deletedItems/graph.user"


def _graph_target(monkeypatch, lab, emulator):
    from providers.graph import open_tenant
    from providers.lab.provider import LabServer
    from reconciler.desired import GraphTargetSpec
    from reconciler.provider import Target

    monkeypatch.setenv("SYNCPREP_TEST_GRAPH_TOKEN", "t")
    spec = GraphTargetSpec(endpoint=emulator.base_url, auth="token-env", token_env="SYNCPREP_TEST_GRAPH_TOKEN", mailbox_pending_minutes=lab.provisioning_minutes)
    return Target(LabServer(lab), open_tenant(spec, backoff=0.001, reread_delay=0.01, poll_interval=0.02))


def test_an_unreadable_recycle_bin_is_unknown_solution_1_still_plans_and_drift_exits_3(monkeypatch):
    from conftest import EXAMPLE
    from providers.lab.graph_emulator import GraphEmulator
    from providers.lab.host import LabHost
    from reconciler import drift

    lab = scenario.build()
    with GraphEmulator(LabHost(lab), token="t", retry_after=0.001, unavailable={DELETED_ROUTE}) as emulator:
        target = _graph_target(monkeypatch, lab, emulator)
        try:
            example = load_desired(EXAMPLE)
            assert plan_for(example, target).steps, "Solution 1 plans as before: it never purges"
            desired = rebuild()
            observed = drift.observe_read_only(target.server, target.tenant, desired)
            assert observed.tenant.deleted_users is None
            report = drift.detect(desired, observed, "graph")
            assert report.exit_code == drift.EXIT_INCOMPLETE and "the recycle bin could not be read" in report.unknown
            plan = plan_for(desired, target)
            assert not any(s.id in ("purge", "rebuild.scope.exclude", "scope.containers", "export.attributes") for s in plan.steps)
        finally:
            target.close()


def test_deleted_users_are_read_with_usage_location_and_licences(monkeypatch):
    from providers.lab.graph_emulator import GraphEmulator
    from providers.lab.host import LabHost
    from reconciler.provider import UserSelection

    lab = scenario.build()
    user = lab.cloud_user("user02@contoso.com")  # licensed, usage location US
    user.deleted_at = lab.clock - 5
    with GraphEmulator(LabHost(lab), token="t", retry_after=0.001) as emulator:
        target = _graph_target(monkeypatch, lab, emulator)
        try:
            (got,) = [d for d in target.tenant.observe(UserSelection()).deleted_users if d.upn == "user02@contoso.com"]
        finally:
            target.close()
    assert got.usage_location == "US"
    assert [a.sku_id for a in got.licenses] == [scenario.ENTERPRISEPACK_ID]


# ---------------------------------------------------------------------------- a half-done manual attempt


def test_a_half_done_attempt_plans_the_threshold_raise_and_converges():
    lab = scenario.build("half-done")
    target = LabTarget(lab)
    old = {u.upn: u.id for u in lab.active_cloud_users()}
    desired = rebuild()
    plan = plan_for(desired, target)
    ids = [s.id for s in plan.steps]
    assert "rebuild.scope.exclude" not in ids, "the OU is out of scope already"
    raise_step = next(s for s in plan.steps if s.id == "rebuild.threshold.raise")
    assert raise_step.before == {"threshold": 10} and raise_step.after["threshold"] > 21
    assert ids.index("rebuild.threshold.raise") < ids.index("rebuild.sync") < ids.index("purge")
    pending = next(n.message for n in plan.notices if n.code == "scope-pending-deletes")
    assert pending.startswith("21 synced user(s) are already out of the sync scope") and "stopped-deletion-threshold-exceeded" in pending
    report = apply_plan(plan, desired, target, approvals=APPROVED | {"threshold-raise"}, force=True)
    assert report.ok, report.results
    assert lab.server.deletion_threshold == 10, "restored"
    for upn in HYBRID:
        user = lab.cloud_user(upn)
        assert user.id != old[upn] and user.mailbox_guid is None
    assert plan_for(desired, target).steps == ()


# ---------------------------------------------------------------------------- licences of purged users


def test_purged_users_get_back_exactly_how_they_were_licensed(lab, target):
    from providers.lab.world import EXCHANGE_PLAN_ID

    e3, ems = scenario.ENTERPRISEPACK_ID, scenario.EMS_ID
    lab.assign_license("user04@contoso.com", e3, disabled_plans=[EXCHANGE_PLAN_ID])  # no mailbox meant for her
    lab.assign_license("user05@contoso.com", e3)
    lab.assign_license("user05@contoso.com", ems)  # a second SKU
    lab.assign_license("user06@contoso.com", e3)
    lab.cloud_user("user06@contoso.com").license(e3).by_group = True  # from a group
    desired = rebuild()
    plan = plan_for(desired, target)
    record = next(n.message for n in plan.notices if n.code == "purge-licences")
    assert "user04@contoso.com: ENTERPRISEPACK (direct, 1 plan(s) off)" in record and "user06@contoso.com: ENTERPRISEPACK (by group)" in record
    assert "user05@contoso.com: ENTERPRISEPACK (direct), EMS (direct)" in record
    restore = {s.id: s for s in plan.steps if s.id.startswith("licences.restore[")}
    assert set(restore) == {"licences.restore[ENTERPRISEPACK]", "licences.restore[EMS]"}
    assert {u.upn for u in restore["licences.restore[ENTERPRISEPACK]"].operation.users} == {f"user0{i}@contoso.com" for i in (1, 2, 3, 4, 5)}
    assert any(n.code == "group-licence-recreated" and "user06@contoso.com" in n.message for n in plan.notices)
    apply_plan(plan, desired, target, approvals=APPROVED, force=True)
    user04, user05, user06 = (lab.cloud_user(f"user0{i}@contoso.com") for i in (4, 5, 6))
    assert user04.license(e3).disabled_plans == (EXCHANGE_PLAN_ID,) and lab.mailbox_state(user04) == "absent", "still no mailbox for her"
    assert user05.license(e3) is not None and user05.license(ems) is not None, "both SKUs back"
    assert user06.license(e3) is None, "not turned into a direct licence"
    assert all(lab.mailbox_state(lab.cloud_user(f"user0{i}@contoso.com")) == "present" for i in (1, 2, 3, 5))


# ---------------------------------------------------------------------------- a mailbox that outlives its licence


def _licence_removed_by_hand():
    """Review 1, finding 1: already prepared, user01's licence removed (her mailbox stays
    for 30 days), the OU taken out by hand and synced: she is in the recycle bin unlicensed."""
    from reconciler.model import SyncPolicy

    lab = scenario.build("already-prepared")
    hybrid = "OU=HybridUsers,OU=Corp,DC=contoso,DC=com"
    lab.remove_license(lab.cloud_user("user01@contoso.com").id, scenario.ENTERPRISEPACK_ID)
    lab.set_scheduler(False)
    lab.set_container_scope(("OU=Corp,DC=contoso,DC=com",), (hybrid,))
    lab.run_cycle(SyncPolicy.INITIAL)
    lab.upgrade()
    return lab


def test_a_deleted_user_whose_exchange_plan_was_removed_is_kept_out_through_graph(monkeypatch):
    from providers.lab.graph_emulator import GraphEmulator
    from providers.lab.host import LabHost
    from reconciler.provider import UserSelection

    lab = _licence_removed_by_hand()
    (user01,) = [u for u in lab.cloud_users if u.upn == "user01@contoso.com" and u.deleted_at is not None]
    assert not user01.licenses and lab.mailbox_state(user01) == "present", "the starting point"
    with GraphEmulator(LabHost(lab), token="t", retry_after=0.001) as emulator:
        target = _graph_target(monkeypatch, lab, emulator)
        try:
            (seen,) = [d for d in target.tenant.observe(UserSelection()).deleted_users if d.upn == "user01@contoso.com"]
            plan = plan_for(rebuild(), target)
        finally:
            target.close()
    purge = next((s for s in plan.steps if s.id == "purge"), None)
    assert purge is None or "user01@contoso.com" not in {r.upn for r in purge.operation.users}, "her mailbox would be destroyed"
    kept = [n.message for n in plan.notices if n.code == "purge-kept" and "user01@contoso.com" in n.message]
    assert kept and "an Exchange Online plan was assigned to them" in kept[0] and "outlives its licence" in kept[0]
    assert seen.mailbox.value == "unknown" and seen.had_exchange_plan, "Graph's evidence: assignedPlans, the removed plan as Deleted"


def test_a_deleted_user_whose_exchange_plan_was_removed_is_purged_when_acknowledged(monkeypatch):
    from providers.lab.graph_emulator import GraphEmulator
    from providers.lab.host import LabHost

    lab = _licence_removed_by_hand()
    with GraphEmulator(LabHost(lab), token="t", retry_after=0.001) as emulator:
        target = _graph_target(monkeypatch, lab, emulator)
        try:
            plan = plan_for(rebuild(acknowledge_loss=("user01@contoso.com",)), target)
        finally:
            target.close()
    purge = next(s for s in plan.steps if s.id == "purge")
    assert "user01@contoso.com" in {r.upn for r in purge.operation.users}
    assert any(n.code == "purge-loss" and n.message.startswith("user01@contoso.com is purged although their mailbox could not be read") for n in plan.notices)

