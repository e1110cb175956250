"""The planner's ordering and choices, against the lab."""

import pytest
from attrs import evolve

from conftest import EXAMPLE, UPGRADE_SAFE, plan_and_apply, plan_for
from providers.lab.provider import LabServer, LabTenant
from providers.lab.world import lab_guid
from reconciler.provider import Target
from reconciler.errors import PlanError
from reconciler.loader import load_desired, loads_desired
from reconciler.model import GUID_ATTRIBUTE, AttributeFlow, Direction, FlowType, SyncPolicy, SyncRule
from reconciler.operations import AssignLicense, CreateRule, RemoveLicense, RemoveRule, SetRuleDisabled, UpdateRule


def ids(plan):
    return [s.id for s in plan.steps]


def test_solution_1_steps_come_in_the_articles_order(target):
    plan = plan_for(EXAMPLE, target)
    user, inet = "rule[In from AD - User Exchange]", "rule[In from AD - InetOrgPerson Exchange]"
    assert ids(plan) == [
        "scheduler.pause",
        f"{user}.disable-original",
        f"{user}.copy",
        f"{user}.remove-original",
        f"{user}.precedence",
        f"{inet}.disable-original",
        f"{inet}.copy",
        f"{inet}.remove-original",
        f"{inet}.precedence",
        "scheduler.resume",
        "sync.initial",
        "license[ENTERPRISEPACK].remove",
        "license[ENTERPRISEPACK].assign",
        "mailboxes[ENTERPRISEPACK].verify",
    ]
    # Every step comes after the steps it depends on.
    seen = set()
    for step in plan.steps:
        assert set(step.depends_on) <= seen, step.id
        seen.add(step.id)


def test_the_copy_keeps_the_stock_flows_and_changes_only_the_guid(target):
    plan = plan_for(EXAMPLE, target)
    copy = next(s for s in plan.steps if s.id == "rule[In from AD - User Exchange].copy").operation
    assert isinstance(copy, CreateRule)
    flows = {f.destination: f for f in copy.rule.flows}
    assert flows[GUID_ATTRIBUTE] == AttributeFlow(GUID_ATTRIBUTE, FlowType.EXPRESSION, expression="NULL", execute_once=True)
    assert flows["usageLocation"].source == "msExchUsageLocation", "usage location still flows: users stay licensable"
    assert not copy.rule.is_standard and copy.rule.scope, "the stock rule's scope filter is copied"


def test_the_temporary_precedence_is_free_never_a_taken_one(lab, target):
    # Take 212 and 213 too: the planner must step around them, and give each copy its own value.
    for precedence in (212, 213):
        lab.put_rule(
            SyncRule(lab_guid("filler", precedence), f"Filler {precedence}", Direction.OUTBOUND, precedence, lab.aad_connector().identifier, "person", "user")
        )
    taken = {r.precedence for r in lab.server.rules}
    plan = plan_for(EXAMPLE, target)
    temporaries = [s.operation.rule.precedence for s in plan.steps if s.id.endswith(".copy")]
    assert 200 in taken
    assert len(set(temporaries)) == 2
    assert not set(temporaries) & taken
    assert all(t >= 200 for t in temporaries)


def test_a_precedence_held_by_another_rule_is_refused_at_plan_time(target):
    desired = loads_desired(
        '[[rules]]\nname = "Mine"\nkind = "custom"\nsource_object_type = "user"\nprecedence = 110\n'
        '  [[rules.flows]]\n  destination = "msExchMailboxGuid"\n  flow_type = "Expression"\n  expression = "AuthoritativeNull"\n'
    )
    with pytest.raises(PlanError, match="precedence 110 is held by 'In from AD - User Lync'"):
        plan_for(desired, target)


def test_an_upgrade_that_brings_back_the_stock_rule_is_undone(lab, target):
    plan_and_apply(EXAMPLE, target)
    lab.upgrade()
    plan = plan_for(EXAMPLE, target)
    removals = [s.operation for s in plan.steps if isinstance(s.operation, RemoveRule)]
    assert {r.name for r in removals} == {"In from AD - User Exchange", "In from AD - InetOrgPerson Exchange"}
    assert not any(isinstance(s.operation, CreateRule) for s in plan.steps), "the copies are still there"
    assert "sync.initial" in ids(plan)
    flows = {g.object_type: g for g in plan.guid_flows}
    assert flows["user"].flows_now and not flows["user"].flows_after


def test_replacing_only_the_user_rule_warns_that_inetorgperson_still_flows(target):
    text = EXAMPLE.read_text().split('[[rules]]\nname = "In from AD - InetOrgPerson Exchange"')[0]
    text += '\n[[licenses]]\nsku = "ENTERPRISEPACK"\nous = ["OU=HybridUsers,OU=Corp,DC=contoso,DC=com"]\n'
    plan = plan_for(loads_desired(text, "partial.toml"), target)
    warnings = [n.message for n in plan.notices if n.code == "guid-still-flows"]
    assert len(warnings) == 1 and "inetOrgPerson" in warnings[0] and "In from AD - InetOrgPerson Exchange" in warnings[0]


def test_relicensing_is_decided_after_the_sync_and_only_where_it_can_help(lab, target):
    plan = plan_for(EXAMPLE, target)
    remove = next(s for s in plan.steps if isinstance(s.operation, RemoveLicense))
    assert remove.decided_after_sync
    assert [u.upn for u in remove.operation.users] == ["user01@contoso.com", "user02@contoso.com", "user03@contoso.com"]
    plan_and_apply(EXAMPLE, target)
    # A mailbox that went missing for a user licensed after the GUID was cleared:
    # relicensing cannot help, so the plan says so instead of relicensing forever.
    lab.cloud_user("user04@contoso.com").mailbox_ready_at = None
    plan = plan_for(EXAMPLE, target)
    assert ids(plan) == []
    assert any(n.code == "no-mailbox-after-clear" and "user04" in n.message for n in plan.notices)


def test_a_licence_that_predates_the_last_full_sync_is_relicensed_without_a_new_sync(lab, target):
    desired = load_desired(UPGRADE_SAFE)
    no_licences = evolve(desired, licenses=())
    plan_and_apply(no_licences, target)  # rules in place and synced, licences untouched
    plan = plan_for(desired, target)
    assert "sync.initial" not in ids(plan)
    remove = next(s for s in plan.steps if isinstance(s.operation, RemoveLicense))
    assert not remove.decided_after_sync
    assert {u.upn for u in remove.operation.users} == {"user01@contoso.com", "user02@contoso.com", "user03@contoso.com"}


def test_users_who_cannot_be_licensed_are_reported_not_planned(target):
    plan = plan_for(EXAMPLE, target)
    assign = next(s.operation for s in plan.steps if isinstance(s.operation, AssignLicense))
    upns = {u.upn for u in assign.users}
    assert "user07@contoso.com" not in upns and "user20@contoso.com" not in upns
    by_code = {n.code: n for n in plan.notices}
    assert by_code["no-usage-location"].users == ("user07@contoso.com",)
    assert "no usage location" in by_code["no-usage-location"].message
    assert by_code["license-shortage"].users == ("user20@contoso.com",)
    assert "17 needed, 16 available" in by_code["license-shortage"].message


def test_a_full_sync_owed_since_a_hand_made_rule_change_is_planned(lab, target):
    plan_and_apply(EXAMPLE, target)
    lab.set_rule_disabled(lab_guid("stock", "In from AD - User Lync"), True)
    lab.run_cycle(SyncPolicy.DELTA)  # somebody ran only a Delta
    plan = plan_for(EXAMPLE, target)
    assert ids(plan) == ["sync.initial"]
    assert "full sync is owed" in plan.steps[0].summary


def test_a_scheduler_left_paused_is_resumed_without_a_sync(lab, target):
    plan_and_apply(EXAMPLE, target)
    lab.set_scheduler(False)
    plan = plan_for(EXAMPLE, target)
    assert ids(plan) == ["scheduler.resume"]
    assert any(n.code == "scheduler-off" for n in plan.notices)


def test_stock_rules_are_enabled_and_disabled_by_name(lab, target):
    desired = loads_desired('[[rules]]\nname = "In from AD - User Lync"\nkind = "stock"\nenabled = false\n')
    plan = plan_for(desired, target)
    (pause, disable, resume, sync) = plan.steps
    assert isinstance(disable.operation, SetRuleDisabled) and disable.operation.disabled
    assert [(c.path, c.before, c.after) for c in disable.changes] == [("enabled", True, False)]


def test_a_custom_rule_that_drifted_is_updated_with_a_field_diff(lab, target):
    plan_and_apply(UPGRADE_SAFE, target)
    identifier = next(r.identifier for r in lab.server.rules if r.name == "Custom - In from AD - User NoMailboxGuid")
    drifted = next(r for r in lab.server.rules if r.identifier == identifier)
    lab.put_rule(evolve(drifted, flows=(AttributeFlow(GUID_ATTRIBUTE, FlowType.EXPRESSION, expression="NULL"),)))
    plan = plan_for(UPGRADE_SAFE, target)
    update = next(s for s in plan.steps if isinstance(s.operation, UpdateRule))
    assert [(c.path, c.before, c.after) for c in update.changes] == [
        ("flows.msExchMailboxGuid", "Expression NULL (Update)", "Expression AuthoritativeNull (Update)")
    ]


def test_staging_mode_is_warned_about(lab, target):
    lab.server.staging_mode = True
    plan = plan_for(EXAMPLE, target)
    assert any(n.code == "staging-mode" for n in plan.notices)


def test_an_unknown_sku_is_a_plan_error(target):
    desired = loads_desired('[[licenses]]\nsku = "SPE_E5"\nusers = ["user01@contoso.com"]\n')
    with pytest.raises(PlanError, match="SKU 'SPE_E5' is not subscribed"):
        plan_for(desired, target)


def test_a_custom_rule_keeps_the_join_the_desired_state_does_not_manage(lab, target):
    from reconciler.model import JoinCondition

    plan_and_apply(UPGRADE_SAFE, target)
    custom = next(r for r in lab.server.rules if r.name == "Custom - In from AD - User NoMailboxGuid")
    joined = evolve(custom, join=((JoinCondition("objectGUID", "sourceAnchor"),),))
    lab.server.rules[lab.server.rules.index(custom)] = joined
    assert plan_for(UPGRADE_SAFE, target).steps == (), "a join is not drift"
    lab.server.rules[lab.server.rules.index(joined)] = evolve(joined, precedence=95)
    update = next(s.operation for s in plan_for(UPGRADE_SAFE, target).steps if isinstance(s.operation, UpdateRule))
    assert update.rule.join == joined.join, "the rewrite carries the join"


class _PlansTenant(LabTenant):
    """The lab tenant, reporting service plans an admin switched off (as Graph does)."""

    disabled = {}

    def observe(self, selection):
        state = super().observe(selection)
        skus = tuple(evolve(s, exchange_plan_ids=("efb87545-963c-4e0d-99df-69c6916d9eb0",)) for s in state.skus)
        users = tuple(
            evolve(u, licenses=tuple(evolve(a, disabled_plans=self.disabled.get(u.upn, ())) for a in u.licenses)) for u in state.users
        )
        return evolve(state, skus=skus, users=users)


def test_relicensing_keeps_the_plans_an_admin_switched_off_and_skips_a_disabled_exchange(lab):
    tenant = _PlansTenant(lab)
    tenant.disabled = {"user01@contoso.com": ("57ff2da0-773e-42df-b2af-ffb7a2317929",), "user02@contoso.com": ("efb87545-963c-4e0d-99df-69c6916d9eb0",)}
    target = Target(LabServer(lab), tenant)
    desired = load_desired(UPGRADE_SAFE)
    plan_and_apply(evolve(desired, licenses=()), target)  # rules in place, synced: relicensing decided now
    plan = plan_for(desired, target)
    remove = next(s.operation for s in plan.steps if isinstance(s.operation, RemoveLicense))
    assign = next(s.operation for s in plan.steps if isinstance(s.operation, AssignLicense))
    assert {u.upn for u in remove.users} == {"user01@contoso.com", "user03@contoso.com"}, "user02's Exchange is off: no mailbox is owed"
    assert assign.disabled_plans == (("user01@contoso.com", ("57ff2da0-773e-42df-b2af-ffb7a2317929",)),)
    assert any(n.code == "exchange-disabled" and "user02" in n.message for n in plan.notices)
