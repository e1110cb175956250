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


# ---------------------------------------------------------------------------- no licence where no mailbox can come

from attrs import evolve  # noqa: E402

from conftest import UPGRADE_SAFE, plan_and_apply  # noqa: E402
from providers.lab.scenario import ENTERPRISEPACK_ID, HYBRID_OU, _ad_user  # noqa: E402
from reconciler.operations import AssignLicense, RemoveLicense, VerifyMailboxes  # noqa: E402
from reconciler.outcome import Verdict  # noqa: E402

E3 = ENTERPRISEPACK_ID
LICENCES = '[[licenses]]\nsku = "ENTERPRISEPACK"\nous = ["OU=HybridUsers,OU=Corp,DC=contoso,DC=com"]\nrelicense_without_mailbox = true\n'


def licence_ops(plan):
    return [s.operation for s in plan.steps if isinstance(s.operation, (AssignLicense, RemoveLicense, VerifyMailboxes))]


def licensed(lab):
    return sorted(u.upn for u in lab.active_cloud_users() if u.license(E3))


def notice(plan, code):
    """The notices of one code, as one: every user they name, their texts joined."""
    from reconciler.steps import Level, Notice

    found = [n for n in plan.notices if n.code == code]
    assert found, code
    return Notice(Level.WARNING, code, " | ".join(n.message for n in found), tuple(u for n in found for u in n.users))


def test_staging_mode_plans_no_licence_and_names_every_user(lab):
    lab.server.staging_mode = True
    target = LabTarget(lab, allow_staging=True)
    desired = load_desired(EXAMPLE)
    plan = plan_for(desired, target)
    assert licence_ops(plan) == []
    held = next(n for n in plan.notices if n.code == "staging-mode" and n.users)
    assert len(held.users) == 21 and "user01@contoso.com" in held.users and "staging mode" in held.message
    before = licensed(lab)
    report = apply_plan(plan, desired, target)
    assert report.ok and licensed(lab) == before
    # The next plan does not remove and re-add licences forever.
    assert licence_ops(plan_for(desired, target)) == []


def test_export_exclusion_alone_licenses_nobody_and_says_why(lab, target):
    desired = loads_desired('[export]\nexcluded_attributes = ["msExchMailboxGuid"]\n' + LICENCES, "exclude.toml")
    plan = plan_for(desired, target)
    assert licence_ops(plan) == []
    held = notice(plan, "guid-stays")
    assert len(held.users) == 21 and "excluded from export" in held.message and "value already in Entra ID stays" in held.message
    before = licensed(lab)
    apply_plan(plan, desired, target)
    assert licensed(lab) == before
    again = plan_for(desired, target)
    assert again.steps == () and "excluded from export" in notice(again, "guid-stays").message


def test_a_rule_still_flowing_for_one_object_type_licenses_only_the_others(lab, target):
    useronly = loads_desired(EXAMPLE.read_text().split('[[rules]]\nname = "In from AD - InetOrgPerson Exchange"')[0] + LICENCES, "useronly.toml")
    plan = plan_for(useronly, target)
    assign, verify = [op for op in licence_ops(plan) if isinstance(op, (AssignLicense, VerifyMailboxes))]
    upns = {u.upn for u in assign.users}
    assert "contractor01@contoso.com" not in upns
    assert "contractor01@contoso.com" not in {u.upn for u in verify.users}, "verify does not wait for a mailbox that cannot come"
    # The unit the inetOrgPerson user would have wasted goes to a user who gets a mailbox.
    assert "user20@contoso.com" in upns
    held = notice(plan, "guid-stays")
    assert held.users == ("contractor01@contoso.com",) and "inetOrgPerson" in held.message
    report = apply_plan(plan, useronly, target)
    assert not lab.cloud_user("contractor01@contoso.com").licenses
    assert lab.mailbox_state(lab.cloud_user("user20@contoso.com")) == "present"
    by_upn = {o.upn: o for o in report.outcomes}
    assert by_upn["contractor01@contoso.com"].verdict is Verdict.BLOCKED


def test_a_user_whose_object_type_is_unknown_is_not_licensed_while_one_type_still_flows(lab):
    from providers.lab.provider import LabTenant
    from reconciler.provider import Target

    class Blind(LabTenant):  # Graph cannot say a user's AD object class
        def observe(self, selection):
            state = super().observe(selection)
            return evolve(state, users=tuple(evolve(u, object_type=None) for u in state.users))

    target = Target(LabTarget(lab).server, Blind(lab))
    useronly = loads_desired(EXAMPLE.read_text().split('[[rules]]\nname = "In from AD - InetOrgPerson Exchange"')[0] + LICENCES, "useronly.toml")
    plan = plan_for(useronly, target)
    assert licence_ops(plan) == []
    assert "cannot tell which object type" in notice(plan, "guid-stays").message


# ---------------------------------------------------------------------------- never remove what cannot be given back


def test_a_licensed_user_without_usage_location_is_not_relicensed(lab, target):
    lab.cloud_user("user01@contoso.com").usage_location = None
    next(u for u in lab.ad_users if u.sam == "user01").usage_location = None
    plan = plan_for(EXAMPLE, target)
    (remove,) = [op for op in licence_ops(plan) if isinstance(op, RemoveLicense)]
    assert "user01@contoso.com" not in {u.upn for u in remove.users}
    apply_plan(plan, load_desired(EXAMPLE), target)
    assert lab.cloud_user("user01@contoso.com").license(E3) is not None, "the licence it had is kept"


DISABLE_STOCK = """
[[rules]]
name = "In from AD - User Exchange"
kind = "stock"
enabled = false

[[rules]]
name = "In from AD - InetOrgPerson Exchange"
kind = "stock"
enabled = false
"""


def test_disabling_the_stock_exchange_rules_says_usage_location_stops_and_removes_no_licence(lab, target):
    desired = loads_desired(DISABLE_STOCK + LICENCES, "disable.toml")
    plan = plan_for(desired, target)
    stops = [n.message for n in plan.notices if n.code == "flows-stop"]
    assert stops and all("usageLocation" in m for m in stops) and "'In from AD - User Exchange'" in " ".join(stops)
    assert licence_ops(plan) == []
    lost = notice(plan, "usage-location-lost")
    assert {"user01@contoso.com", "user02@contoso.com", "user03@contoso.com"} <= set(lost.users)
    report = apply_plan(plan, desired, target)
    assert report.ok
    assert {"user01@contoso.com", "user02@contoso.com", "user03@contoso.com"} <= set(licensed(lab)), "no licence lost"


# ---------------------------------------------------------------------------- the reviewed plan is the contract


def test_a_saved_plan_without_licence_steps_licenses_nobody_on_an_empty_tenant(cli):
    from providers.lab import store

    assert cli("lab", "init", "--scenario", "empty-tenant")[0] == 0
    cli("plan", EXAMPLE, "-out", "plan.json")
    import json
    from pathlib import Path

    saved = json.loads(Path("plan.json").read_text())
    assert not any(s["id"].startswith("license[") for s in saved["steps"])
    code, out, _err = cli("apply", "plan.json", "--desired", EXAMPLE, "--auto-approve")
    lab = store.load(store.DEFAULT_PATH)
    assert [u for u in licensed(lab) if u.endswith("@contoso.com")] == [], "users the reviewed plan did not license wait for the next plan"
    assert "not licensed by the reviewed plan" in out
    # The next plan licenses them, for review.
    _code, out, _err = cli("plan", EXAMPLE)
    assert "Assign ENTERPRISEPACK" in out


def test_a_new_hire_before_apply_does_not_take_a_reviewed_users_unit(lab, target):
    desired = load_desired(EXAMPLE)
    plan = plan_for(desired, target)
    (assign,) = [op for op in licence_ops(plan) if isinstance(op, AssignLicense)]
    reviewed = sorted(u.upn for u in assign.users)
    assert "user19@contoso.com" in reviewed
    # A new AD user in the OU (sorting before user19), synced by the apply's own full sync.
    hire = evolve(_ad_user(1, 2, HYBRID_OU, prefix="aaron"), changed_at=lab.clock)
    lab.ad_users.append(hire)
    report = apply_plan(plan, desired, target)
    assert lab.cloud_user("aaron01@contoso.com") is not None, "the sync brought the new hire"
    assert not lab.cloud_user("aaron01@contoso.com").licenses
    assert lab.cloud_user("user19@contoso.com").license(E3) is not None
    assert sorted(u for u in licensed(lab) if u in reviewed) == reviewed
    waits = [o for o in report.outcomes if o.upn == "aaron01@contoso.com"]
    assert waits and waits[0].code == "not-in-plan"


# ---------------------------------------------------------------------------- reporting


def test_the_report_lists_every_user_in_scope_and_apply_exits_4_when_some_are_left(cli):
    import csv
    import json
    from pathlib import Path

    code, _out, _err = cli("plan", EXAMPLE, "--report", "plan.csv")
    assert code == 0
    rows = {r["upn"]: r for r in csv.DictReader(Path("plan.csv").open())}
    assert len(rows) == 21  # 20 mailbox users and the inetOrgPerson contractor
    assert rows["user01@contoso.com"]["outcome"] == "remove and assign again"
    assert rows["user04@contoso.com"]["mailbox_after"] == "expected"
    assert rows["user07@contoso.com"]["code"] == "no-usage-location"
    assert rows["user20@contoso.com"]["code"] == "license-shortage"
    assert rows["contractor01@contoso.com"]["object_type"] == "inetOrgPerson"
    code, out, _err = cli("apply", EXAMPLE, "--auto-approve", "--report", "apply.json")
    assert code == 4, "two targeted users ended without a licence"
    assert "user07@contoso.com" in out and "user20@contoso.com" in out
    users = {r["upn"]: r for r in json.loads(Path("apply.json").read_text())["users"]}
    assert users["user04@contoso.com"]["mailbox_actual"] == "present" and users["user04@contoso.com"]["as_desired"]
    assert not users["user07@contoso.com"]["as_desired"] and users["user07@contoso.com"]["licence_actual"] == "none"
    assert cli("plan", EXAMPLE, "--report", "plan.txt")[0] == 1


def test_json_lists_are_never_shortened(cli):
    import json
    from pathlib import Path

    cli("lab", "init", "--users", "40")
    Path("exclude.toml").write_text('[export]\nexcluded_attributes = ["msExchMailboxGuid"]\n' + LICENCES)
    _code, out, _err = cli("plan", "exclude.toml", "--json")
    held = [n for n in json.loads(out)["notices"] if n["code"] == "guid-stays"]
    users = [u for n in held for u in n["users"]]
    assert len(users) == 41 and not any(" more" in n["message"] for n in held)
    assert all(n["message"].endswith(", ".join(n["users"])) for n in held)
    # The text view shortens a long list (--report has them all).
    _code, out, _err = cli("plan", "exclude.toml")
    assert "and 30 more" in out


# ---------------------------------------------------------------------------- drift


def drift_of(desired, target):
    from reconciler.drift import detect, observe_read_only

    if not hasattr(desired, "rules"):
        desired = load_desired(desired)
    return detect(desired, observe_read_only(target.server, target.tenant, desired))


def test_drift_sees_a_custom_rule_that_makes_the_guid_flow_again_and_the_users_it_reached(lab, target):
    from reconciler.model import GUID_ATTRIBUTE, AttributeFlow, Direction, FlowType, LinkType, SyncRule
    from reconciler.model import SyncPolicy

    plan_and_apply(EXAMPLE, target)
    assert drift_of(EXAMPLE, target).exit_code == 0
    lab.put_rule(
        SyncRule(
            "11111111-2222-3333-4444-555555555555", "Someone's GUID rule", Direction.INBOUND, 50, lab.ad_connector().identifier, "user", "person",
            LinkType.JOIN, flows=(AttributeFlow(GUID_ATTRIBUTE, FlowType.DIRECT, source=GUID_ATTRIBUTE),),
        )
    )
    lab.run_cycle(SyncPolicy.INITIAL)
    report = drift_of(EXAMPLE, target)
    assert report.exit_code == 2
    by_what = {i.what: i for i in report.items}
    assert "Someone's GUID rule" in by_what["GUID flows"].detail and by_what["GUID flows"].resource == "guid/user"
    back = by_what["GUID in the cloud"].detail
    assert "20 user(s)" in back and "user01@contoso.com" in back and "contractor01" not in back


def test_drift_before_the_first_apply_says_nothing_of_mailboxes_gone(target):
    report = drift_of(EXAMPLE, target)
    whats = {i.what for i in report.items}
    assert "mailbox gone" not in whats
    assert "licensed without a mailbox" in whats and "GUID flows" in whats


def test_drift_after_an_upgrade_with_the_upgrade_safe_rules_is_in_sync(lab, target):
    plan_and_apply(UPGRADE_SAFE, target)
    assert drift_of(UPGRADE_SAFE, target).exit_code == 0
    lab.upgrade()
    report = drift_of(UPGRADE_SAFE, target)
    assert report.items == () and report.exit_code == 0


def test_the_core_has_no_import_circle_not_even_through_function_level_imports():
    import ast
    import graphlib

    from conftest import ROOT

    graph = {}
    for path in (ROOT / "reconciler").glob("*.py"):
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "reconciler":
                deps |= {f"reconciler.{a.name}" for a in node.names if (ROOT / "reconciler" / f"{a.name}.py").exists()}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("reconciler."):
                deps.add(node.module)
        graph[f"reconciler.{path.stem}"] = deps
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as exc:
        pytest.fail(f"import circle: {' -> '.join(exc.args[1])}")


# ---------------------------------------------------------------------------- verify


def test_verify_does_not_wait_for_a_user_whose_licence_was_not_assigned(lab):
    from providers.lab.provider import LabTenant
    from reconciler.operations import Outcome
    from reconciler.provider import Target

    verified = []

    class Refuses(LabTenant):
        def apply(self, operation):
            if isinstance(operation, AssignLicense):
                others = tuple(r for r in operation.users if r.upn != "user05@contoso.com")
                done = super().apply(AssignLicense(operation.sku_id, operation.part_number, others, operation.disabled_plans))
                return Outcome(done.detail, (*done.failures, ("user05@contoso.com", "Subscription does not have any available licenses.")))
            if isinstance(operation, VerifyMailboxes):
                verified.append({r.upn for r in operation.users})
            return super().apply(operation)

    target = Target(LabTarget(lab).server, Refuses(lab))
    desired = load_desired(EXAMPLE)
    events = []
    report = apply_plan(plan_for(desired, target), desired, target, on_event=events.append)
    assert verified and "user05@contoso.com" not in verified[0] and "user04@contoso.com" in verified[0]
    assert any(e.kind == "note" and "not waited for: user05@contoso.com" in e.message for e in events)
    assert ("user05@contoso.com", "Subscription does not have any available licenses.", "license[ENTERPRISEPACK].assign") in report.user_failures


def test_a_plan_with_nothing_to_do_for_users_it_cannot_help_says_so(cli):
    from pathlib import Path

    Path("exclude.toml").write_text('[export]\nexcluded_attributes = ["msExchMailboxGuid"]\n' + LICENCES)
    cli("apply", "exclude.toml", "--auto-approve")
    _code, out, _err = cli("plan", "exclude.toml", "--no-color")
    assert "No changes." in out and "Nothing this plan can do helps the 21 user(s)" in out
    assert "The environment matches the desired state" not in out
    assert "msExchMailboxGuid is excluded from export, and the value already in Entra ID stays" in out


def test_the_scope_notice_names_every_user_it_soft_deletes():
    lab = scenario.build("default", users=30)
    target = LabTarget(lab)
    desired = loads_desired('[scope]\nincluded = ["OU=Corp,DC=contoso,DC=com"]\nexcluded = ["OU=HybridUsers,OU=Corp,DC=contoso,DC=com"]\n', "scope.toml")
    plan = plan_for(desired, target)
    (deletes,) = [n for n in plan.notices if n.code == "scope-deletes"]
    assert len(deletes.users) == 31 and " more" not in deletes.message and deletes.message.endswith(", ".join(deletes.users))
