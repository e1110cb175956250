"""Solution 2 and its safety rails: each test is a lab scenario that would lose or restore data without the rail."""

import pytest
from attrs import evolve

from conftest import ROOT, plan_for
from providers.lab.provider import LabTarget, LabTenant
from providers.lab.scenario import HYBRID_OU
from providers.lab.world import LabCloudUser, lab_guid
from reconciler.apply import Status, apply_plan
from reconciler.errors import ApplyError, PlanError, ProviderError
from reconciler.loader import load_desired, loads_desired
from reconciler.operations import PurgeDeletedUsers, SetDeletionThreshold
from reconciler.provider import Target

REBUILD = ROOT / "desired-state" / "rebuild.toml"
HYBRID = {f"user{i:02d}@contoso.com" for i in range(1, 21)} | {"contractor01@contoso.com"}
APPROVED = frozenset({"irreversible"})


def rebuild(**purge_changes):
    desired = load_desired(REBUILD)
    return evolve(desired, purge=evolve(desired.purge, **purge_changes)) if purge_changes else desired


def ids(plan):
    return [s.id for s in plan.steps]


def test_the_plan_lists_the_purge_by_upn_in_the_safe_order(target):
    plan = plan_for(REBUILD, target)
    assert ids(plan) == [
        "rebuild.scheduler.pause",
        "rebuild.scope.exclude",
        "rebuild.scheduler.resume",
        "rebuild.sync",
        "purge",
        "scheduler.pause",
        "export.attributes",
        "scope.containers",
        "scheduler.resume",
        "sync.initial",
        "licences.restore[ENTERPRISEPACK]",  # user01-03 held it before the purge
        "mailboxes.restored.verify",
        "license[ENTERPRISEPACK].assign",
        "mailboxes[ENTERPRISEPACK].verify",
    ]
    purge = next(s for s in plan.steps if s.id == "purge")
    assert {u.upn for u in purge.operation.users} == HYBRID
    assert purge.approval == "irreversible" and purge.decided_after_sync
    # The OU comes back only after the hard delete: otherwise sync restores the old objects, GUID included.
    assert "purge" in next(s for s in plan.steps if s.id == "scope.containers").depends_on
    assert "21 user(s) will be soft-deleted" in next(s for s in plan.steps if s.id == "rebuild.scope.exclude").summary


def test_rebuild_applies_to_new_users_without_guids_with_mailboxes_and_converges(lab, target):
    old_ids = {u.upn: u.id for u in lab.active_cloud_users()}
    desired = load_desired(REBUILD)
    plan = plan_for(desired, target)
    report = apply_plan(plan, desired, target, approvals=APPROVED, force=True)
    assert report.ok, report.results
    for upn in HYBRID:
        user = lab.cloud_user(upn)
        assert user.id != old_ids[upn], f"{upn} is a new object"
        assert user.mailbox_guid is None
    with_mailbox = {u.upn for u in lab.active_cloud_users() if lab.mailbox_state(u) == "present"}
    assert HYBRID - with_mailbox == {"user07@contoso.com", "user20@contoso.com"}  # no usage location; one unit short
    assert not any(u.deleted_at is not None for u in lab.cloud_users)
    assert plan_for(desired, target).steps == ()


def test_auto_approve_alone_does_not_purge(lab, target):
    desired = load_desired(REBUILD)
    plan = plan_for(desired, target)
    with pytest.raises(ApplyError, match=r"need explicit approval \(irreversible\)"):
        apply_plan(plan, desired, target, force=True)
    assert lab.ad_connector().excluded_containers == () and len(lab.active_cloud_users()) == 24


def test_too_many_deletes_need_force(lab, target):
    desired = load_desired(REBUILD)
    plan = plan_for(desired, target)
    assert plan.unsafe == ("Too many deletes: 91.30% is over 30.00% (21/23 synced users); force required",)
    with pytest.raises(ApplyError, match="force required"):
        apply_plan(plan, desired, target, approvals=APPROVED)
    assert len(lab.active_cloud_users()) == 24


def test_a_failed_purge_keeps_the_ou_out_so_nothing_is_restored_with_its_guid(lab):
    class FailingTenant(LabTenant):
        def apply(self, operation):
            if isinstance(operation, PurgeDeletedUsers):
                raise ProviderError(self.name, "recycle bin", "injected failure")
            return super().apply(operation)

    target = Target(LabTarget(lab).server, FailingTenant(lab))
    desired = load_desired(REBUILD)
    report = apply_plan(plan_for(desired, target), desired, target, approvals=APPROVED, force=True)
    assert next(r for r in report.results if r.step_id == "purge").status is Status.FAILED
    assert HYBRID_OU in lab.ad_connector().excluded_containers, "the OU stays out: no restore from the recycle bin"
    lab.advance(120)  # scheduled cycles run; they must not bring the old objects back
    assert lab.cloud_user("user05@contoso.com") is None
    assert lab.server.sync_cycle_enabled
    # Resumable: the next plan purges what is in the recycle bin and carries on.
    target = LabTarget(lab)
    plan = plan_for(desired, target)
    assert ids(plan)[0] == "purge" and not plan.steps[0].decided_after_sync
    assert apply_plan(plan, desired, target, approvals=APPROVED, force=True).ok
    assert lab.cloud_user("user05@contoso.com").mailbox_guid is None


def test_excluding_the_attribute_alone_says_the_values_stay(lab, target):
    desired = loads_desired('[export]\nexcluded_attributes = ["msExchMailboxGuid"]\n', "exclude-only.toml")
    plan = plan_for(desired, target)
    assert any(n.code == "exclusion-keeps-values" for n in plan.notices)
    assert apply_plan(plan, desired, target).ok
    assert lab.cloud_user("user05@contoso.com").mailbox_guid, "the GUID already in Entra ID stays"


def test_over_the_deletion_threshold_the_plan_raises_it_temporarily_only_with_approval(lab, target):
    lab.set_deletion_threshold(10)
    desired = load_desired(REBUILD)
    plan = plan_for(desired, target)
    raise_step = next(s for s in plan.steps if s.id == "rebuild.threshold.raise")
    assert raise_step.operation == SetDeletionThreshold(36) and raise_step.approval == "threshold-raise"  # 21 users, 2 groups, a contact, 2 devices and a margin
    assert next(s for s in plan.steps if s.id == "threshold.restore").operation == SetDeletionThreshold(10)
    with pytest.raises(ApplyError, match="threshold-raise"):
        apply_plan(plan, desired, target, approvals=APPROVED, force=True)
    report = apply_plan(plan, desired, target, approvals=APPROVED | {"threshold-raise"}, force=True)
    assert report.ok
    assert lab.server.deletion_threshold == 10
    assert lab.cloud_user("user05@contoso.com").mailbox_guid is None


def test_cloud_only_users_are_never_purged(lab, target):
    cloud_only = LabCloudUser(id=lab_guid("cloud", "ghost"), upn="ghost@contoso.com", usage_location="US", deleted_at=lab.clock)
    lab.cloud_users.append(cloud_only)
    desired = rebuild(users=("ghost@contoso.com", "admin@contoso.onmicrosoft.com"))
    plan = plan_for(desired, target)
    purge = next(s for s in plan.steps if s.id == "purge")
    assert {u.upn for u in purge.operation.users} == HYBRID
    codes = [n.message for n in plan.notices if n.code == "purge-cloud-only"]
    assert len(codes) == 2
    apply_plan(plan, desired, target, approvals=APPROVED, force=True)
    assert cloud_only in lab.cloud_users and lab.cloud_user("admin@contoso.onmicrosoft.com") is not None


def test_a_purge_beyond_the_maximum_is_refused(target):
    with pytest.raises(PlanError, match="21 users would be purged, more than max_count allows \\(20\\)"):
        plan_for(rebuild(max_count=20), target)


def test_the_default_ceiling_applies_without_a_maximum():
    from providers.lab import scenario

    target = LabTarget(scenario.build(users=60))
    with pytest.raises(PlanError, match="the default ceiling \\(50"):
        plan_for(rebuild(max_count=None), target)


class BlindTenant(LabTenant):
    """A tenant whose recycle bin cannot be read (throttled, or a missing permission)."""

    blind = True

    def observe(self, selection):
        state = super().observe(selection)
        return evolve(state, deleted_users=None) if self.blind else state


def test_an_unknown_recycle_bin_blocks_every_step_of_solution_2(lab):
    target = Target(LabTarget(lab).server, BlindTenant(lab))
    desired = load_desired(REBUILD)
    plan = plan_for(desired, target)
    assert not [s.id for s in plan.steps if s.id.startswith(("rebuild.", "purge", "scope.", "export.", "threshold."))]
    assert any(n.code == "recycle-bin-unknown" and "unknown, not empty" in n.message for n in plan.notices)
    apply_plan(plan, desired, target, approvals=APPROVED, force=True)
    assert lab.ad_connector().excluded_containers == () and not any(u.deleted_at is not None for u in lab.cloud_users)


def test_an_unknown_recycle_bin_after_the_sync_purges_nothing(lab):
    tenant = BlindTenant(lab)
    tenant.blind = False
    target = Target(LabTarget(lab).server, tenant)
    desired = load_desired(REBUILD)
    plan = plan_for(desired, target)
    tenant.blind = True
    report = apply_plan(plan, desired, target, approvals=APPROVED, force=True)
    failed = next(r for r in report.results if r.status is Status.FAILED)
    assert failed.step_id == "purge" and "nothing was purged" in failed.detail
    assert sum(1 for u in lab.cloud_users if u.deleted_at is not None) == 21


def test_soft_deletes_that_differ_from_the_prediction_stop_the_purge(lab, target):
    desired = load_desired(REBUILD)
    plan = plan_for(desired, target)
    # Between plan and apply, someone moves a user out of the OU on-premises.
    moved = next(u for u in lab.ad_users if u.sam == "user05")
    moved.dn = "CN=user05,OU=Elsewhere,OU=Corp,DC=contoso,DC=com"
    report = apply_plan(plan, desired, target, approvals=APPROVED, force=True)
    failed = next(r for r in report.results if r.status is Status.FAILED)
    assert failed.step_id == "purge"
    assert "predicted but not in the recycle bin: user05@contoso.com" in failed.detail
    assert sum(1 for u in lab.cloud_users if u.deleted_at is not None) == 20, "nothing purged"


def test_cli_needs_the_irreversible_approval_and_force(cli):
    code, out, _ = cli("plan", REBUILD)
    assert "IRREVERSIBLE" in out and "contractor01@contoso.com, user01@contoso.com" in out and "user20@contoso.com" in out
    code, _out, err = cli("apply", REBUILD, "--auto-approve", "--force")
    assert code == 1 and "--approve-irreversible" in err
    code, _out, err = cli("apply", REBUILD, "--auto-approve", "--approve-irreversible")
    assert code == 1 and "force required" in err
    code, out, err = cli("apply", REBUILD, "--auto-approve", "--approve-irreversible", "--force")
    assert code in (0, 4), err  # 4 when a licensed-for user ends without a mailbox
    assert cli("plan", REBUILD, "--detailed-exitcode")[0] == 0
