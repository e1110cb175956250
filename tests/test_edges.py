"""Edges found in review: each test reproduces what a user would have hit."""

import pytest
from attrs import evolve

from conftest import EXAMPLE, ROOT, plan_and_apply, plan_for
from providers.lab.provider import LabServer, LabTarget, LabTenant
from providers.lab.scenario import HYBRID_OU
from reconciler.apply import Status, apply_plan
from reconciler.errors import ConfigError, ProviderError
from reconciler.loader import load_desired, loads_desired
from reconciler.model import SyncPolicy
from reconciler.operations import CreateRule, PurgeDeletedUsers, SetScheduler
from reconciler.provider import Target

REBUILD = ROOT / "desired-state" / "rebuild.toml"
APPROVED = frozenset({"irreversible", "threshold-raise"})


class SelectiveTenant(LabTenant):
    """The lab tenant, leaving out users outside the selection, as the Graph provider does."""

    def observe(self, selection):
        state = super().observe(selection)
        return evolve(state, users=tuple(u for u in state.users if selection.matches(u)))


def test_a_desired_scheduler_off_converges_and_stays_off(lab, target):
    desired = loads_desired(EXAMPLE.read_text().replace("sync_cycle_enabled = true", "sync_cycle_enabled = false"), "off.toml")
    _plan, report = plan_and_apply(desired, target)
    assert report.ok and not lab.server.sync_cycle_enabled
    assert plan_for(desired, target).steps == ()


def test_solution_2_sees_every_user_it_touches_even_when_licences_name_two(lab):
    text = REBUILD.read_text().replace('ous = ["OU=HybridUsers,OU=Corp,DC=contoso,DC=com"]\n\n', "", 0)
    text = text.split("[[licenses]]")[0] + '[[licenses]]\nsku = "ENTERPRISEPACK"\nusers = ["user04@contoso.com", "user05@contoso.com"]\n'
    desired = loads_desired(text, "r2.toml")
    target = Target(LabServer(lab), SelectiveTenant(lab))
    plan = plan_for(desired, target)
    scope_out = next(s for s in plan.steps if s.id == "rebuild.scope.exclude")
    assert "21 user(s) will be soft-deleted" in scope_out.summary
    assert len(next(s for s in plan.steps if s.id == "purge").operation.users) == 21
    assert plan.unsafe and "(21/23 synced users)" in plan.unsafe[0]


def test_a_purge_that_misses_a_user_stops_before_the_ou_comes_back(lab):
    class OneFails(LabTenant):
        def apply(self, operation):
            if isinstance(operation, PurgeDeletedUsers):
                keep = tuple(u for u in operation.users if u.upn != "user05@contoso.com")
                outcome = super().apply(PurgeDeletedUsers(keep))
                return evolve(outcome, failures=(("user05@contoso.com", "injected"),))
            return super().apply(operation)

    target = Target(LabServer(lab), OneFails(lab))
    desired = load_desired(REBUILD)
    report = apply_plan(plan_for(desired, target), desired, target, approvals=APPROVED, force=True)
    assert next(r for r in report.results if r.step_id == "purge").status is Status.FAILED
    assert HYBRID_OU in lab.ad_connector().excluded_containers, "the OU stays out"
    assert lab.cloud_user("user05@contoso.com") is None, "not restored with its GUID"


def test_a_raised_threshold_is_put_back_when_the_apply_stops(lab):
    class PurgeFails(LabTenant):
        def apply(self, operation):
            if isinstance(operation, PurgeDeletedUsers):
                raise ProviderError(self.name, "recycle bin", "injected")
            return super().apply(operation)

    lab.set_deletion_threshold(10)
    target = Target(LabServer(lab), PurgeFails(lab))
    desired = load_desired(REBUILD)
    report = apply_plan(plan_for(desired, target), desired, target, approvals=APPROVED, force=True)
    assert not report.ok
    assert lab.server.deletion_threshold == 10


def test_a_scheduler_found_off_is_turned_back_on_when_the_apply_fails(lab):
    lab.set_scheduler(False)  # left paused by a run that was killed

    class RefusesCopies(LabServer):
        def apply(self, operation):
            if isinstance(operation, CreateRule):
                raise ProviderError(self.name, "rule", "injected")
            return super().apply(operation)

    target = Target(RefusesCopies(lab), LabTenant(lab))
    desired = load_desired(EXAMPLE)
    report = apply_plan(plan_for(desired, target), desired, target)
    assert not report.ok and lab.server.sync_cycle_enabled


def test_relicensing_stops_when_the_clearing_sync_has_left_the_history(lab, target):
    useronly = loads_desired(EXAMPLE.read_text().split('[[rules]]\nname = "In from AD - InetOrgPerson Exchange"')[0]
                             + '[[licenses]]\nsku = "ENTERPRISEPACK"\nous = ["OU=HybridUsers,OU=Corp,DC=contoso,DC=com"]\n', "useronly.toml")
    plan_and_apply(useronly, target)
    # The inetOrgPerson user still gets the GUID: never licensed, so no mailbox is owed it.
    assert not lab.cloud_user("contractor01@contoso.com").licenses
    lab.cloud_user("user05@contoso.com").mailbox_ready_at = None  # a mailbox that never came
    lab.advance(600)  # scheduled Delta cycles push the full sync out of the observed history
    plan = plan_for(useronly, target)
    assert plan.steps == ()
    assert any(n.code == "no-mailbox-unknown-clear" and "user05" in n.message for n in plan.notices)
    assert any(n.code == "guid-stays" and "contractor01" in n.message for n in plan.notices)


def test_two_licence_entries_for_one_sku_are_an_error():
    with pytest.raises(ConfigError, match=r"licenses\[1\].sku: ENTERPRISEPACK is already licensed by licenses\[0\]"):
        loads_desired('[[licenses]]\nsku = "ENTERPRISEPACK"\nusers = ["a@contoso.com"]\n[[licenses]]\nsku = "ENTERPRISEPACK"\nusers = ["b@contoso.com"]\n')


def test_a_scope_change_that_deletes_most_users_needs_force(target):
    desired = loads_desired('[scope]\nincluded = ["OU=Corp,DC=contoso,DC=com"]\nexcluded = ["OU=HybridUsers,OU=Corp,DC=contoso,DC=com"]\n')
    plan = plan_for(desired, target)
    assert plan.unsafe == ("Too many deletes: 91.30% is over 30.00% (21/23 synced users leave the scope); force required",)


def test_the_recycle_bin_empties_itself_after_30_days(lab):
    lab.set_container_scope(["OU=Corp,DC=contoso,DC=com"], [HYBRID_OU])
    lab.run_cycle(SyncPolicy.INITIAL)
    assert any(u.deleted_at is not None for u in lab.cloud_users)
    lab.set_scheduler(False)
    lab.advance(30 * 24 * 60 + 1)
    assert not any(u.deleted_at is not None for u in lab.cloud_users)


def test_resume_with_nothing_left_closes_the_interrupted_run(cli, tmp_path):
    from reconciler.journal import Journal, last_interrupted

    cli("apply", EXAMPLE, "--auto-approve")
    journal = next(tmp_path.joinpath(".syncprep").glob("*.journal"))
    # A run that was killed after its last change, before it could say so.
    Journal(journal).start("x", "apply", ["mailboxes[ENTERPRISEPACK].verify"])
    assert last_interrupted(journal) is not None
    code, _out, err = cli("apply", EXAMPLE, "--auto-approve", "--resume")
    assert code == 0 and "was interrupted" in err
    assert last_interrupted(journal) is None
    _code, _out, err = cli("plan", EXAMPLE)
    assert "interrupted" not in err
