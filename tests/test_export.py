"""Export to a desired-state file: it loads, and export followed by plan is a no-op."""

import datetime as dt

import pytest
import tomli
from attrs import evolve

from conftest import EXAMPLE, ROOT, UPGRADE_SAFE, plan_for
from providers.lab import scenario
from providers.lab.provider import LabTarget
from reconciler.apply import apply_plan
from reconciler.desired import GraphTargetSpec, EntraConnectTargetSpec, RuleKind, TargetKind, TargetSpec
from reconciler.export import export_desired, observe_for_export, toml_string
from reconciler.loader import load_desired, loads_desired
from reconciler.model import GUID_ATTRIBUTE, AttributeFlow, Direction, FlowType, LinkType, MergeType, ScopeCondition, SyncPolicy, SyncRule

REBUILD = ROOT / "desired-state" / "rebuild.toml"


def export_then_plan(target, **kwargs):
    text = export_desired(observe_for_export(target), **kwargs)
    desired = loads_desired(text, "<export>")
    return text, desired, plan_for(desired, target)


def settle(target):
    """After a rule change behind the tool's back the server owes a full sync; let it run."""
    target.lab.run_cycle(SyncPolicy.INITIAL)


def apply(path, target, **kwargs):
    desired = load_desired(path)
    plan = plan_for(desired, target)
    report = apply_plan(plan, desired, target, **kwargs)
    assert report.ok, report.results
    assert not plan_for(desired, target).steps


@pytest.mark.parametrize("name", scenario.SCENARIOS)
def test_export_then_plan_is_empty_for_every_scenario(name):
    target = LabTarget(scenario.build(name))
    text, desired, plan = export_then_plan(target)
    # half-done: the scope changed by hand still owes its full sync (stopped at the threshold).
    assert [s.id for s in plan.steps] == (["sync.initial"] if name == "half-done" else [])
    assert text.startswith("# Exported by syncprep")
    # Every rule on the server is named (one entry per name).
    assert {r.name for r in desired.rules} == {r.name for r in target.lab.server.rules}


@pytest.mark.parametrize(
    "path, approvals, force",
    [(EXAMPLE, frozenset(), False), (UPGRADE_SAFE, frozenset(), False), (REBUILD, frozenset({"irreversible"}), True)],
    ids=["example", "upgrade-safe", "rebuild"],
)
def test_export_then_plan_is_empty_after_applying(target, path, approvals, force):
    apply(path, target, approvals=approvals, force=force)
    _text, desired, plan = export_then_plan(target)
    assert plan.steps == (), [s.id for s in plan.steps]
    kinds = {r.name: r.kind for r in desired.rules}
    if path == EXAMPLE:
        # The Solution 1 copies carry the stock rules' names: written out in full as custom rules.
        copy = next(r for r in desired.rules if r.name == "In from AD - User Exchange")
        assert copy.kind is RuleKind.CUSTOM and copy.precedence == 108
        guid = next(f for f in copy.flows if f.destination == GUID_ATTRIBUTE)
        assert (guid.flow_type, guid.expression, guid.apply_once) == (FlowType.EXPRESSION, "NULL", True)
        assert copy.scope and copy.scope[0][0].attribute == "mailNickname"
    if path == UPGRADE_SAFE:
        assert kinds["Custom - In from AD - User NoMailboxGuid"] is RuleKind.CUSTOM
        assert kinds["In from AD - User Exchange"] is RuleKind.STOCK
    if path == REBUILD:
        assert desired.export.excluded_attributes == (GUID_ATTRIBUTE,)
        assert desired.scope.included == ("OU=Corp,DC=contoso,DC=com",)
        assert desired.purge is None  # export never purges


def test_licences_are_recorded_never_relicensed(target):
    _text, desired, plan = export_then_plan(target)
    (spec,) = desired.licenses
    assert spec.sku == "ENTERPRISEPACK" and not spec.relicense_without_mailbox
    # user01-03 hold a licence without a mailbox: reported, not relicensed.
    assert spec.users == ("user01@contoso.com", "user02@contoso.com", "user03@contoso.com")
    # (the exported rules still flow the GUID: that is the reason given, more to the point than the flag)
    (held,) = [n for n in plan.notices if n.code == "guid-stays"]
    assert held.users == ("user01@contoso.com", "user02@contoso.com", "user03@contoso.com")
    # The cloud-only admin's licence is not syncprep's to manage.
    assert not any("onmicrosoft" in u for s in desired.licenses for u in s.users)


def test_no_export_section_when_nothing_is_excluded(target):
    text, desired, _plan = export_then_plan(target)
    assert desired.export is None and "[export]" not in text
    assert desired.scope.included == ("OU=Corp,DC=contoso,DC=com",) and desired.scope.excluded == ()


def test_scheduler_left_off_is_exported_as_off(target):
    target.lab.set_scheduler(False)
    _text, desired, plan = export_then_plan(target)
    assert desired.scheduler.sync_cycle_enabled is False
    assert plan.steps == ()


def test_a_stock_rule_back_after_an_upgrade_beside_its_copy(target):
    apply(EXAMPLE, target)
    target.lab.upgrade()
    settle(target)
    text, desired, plan = export_then_plan(target)
    # One entry per name: the copy, in full; the stock rule is named in a comment, unmanaged.
    named = [r for r in desired.rules if r.name == "In from AD - User Exchange"]
    assert len(named) == 1 and named[0].kind is RuleKind.CUSTOM
    assert "# not exported: stock rule 'In from AD - User Exchange'" in text
    assert plan.steps == ()


HOSTILE_DESCRIPTION = 'He said "no GUID" \\ C:\\path\\ \t tab \u00e9 and a "# not a comment" \\" end\\'


def _custom_rule(lab, **changes):
    rule = SyncRule(
        identifier="11111111-2222-3333-4444-555555555555",
        name='Custom "quoted" \\ rule',
        direction=Direction.INBOUND,
        precedence=42,
        connector=scenario.AD_CONNECTOR,
        source_object_type="user",
        target_object_type="person",
        link_type=LinkType.STICKY_JOIN,
        flows=(
            AttributeFlow("extensionAttribute2", FlowType.EXPRESSION, expression='"a\\b \\"q\\" # x"', merge_type=MergeType.REPLACE),
            AttributeFlow("extensionAttribute1", FlowType.CONSTANT, expression="const \"v\""),
            AttributeFlow("displayName", FlowType.DIRECT, source="displayName", execute_once=True),
        ),
        scope=(
            (ScopeCondition("department", "EQUAL", 'R&D "lab"'), ScopeCondition("mailNickname", "ISNOTNULL")),
            (ScopeCondition("company", "NOTEQUAL", "x\\y"),),
        ),
        description=HOSTILE_DESCRIPTION,
    )
    rule = evolve(rule, **changes)
    lab.put_rule(rule)
    settle(LabTarget(lab))
    return rule


def test_a_custom_rule_with_quotes_and_backslashes_round_trips(target):
    rule = _custom_rule(target.lab)
    text, desired, plan = export_then_plan(target)
    assert plan.steps == (), [(s.id, s.changes) for s in plan.steps]
    spec = next(r for r in desired.rules if r.name == rule.name)
    assert spec.description == HOSTILE_DESCRIPTION
    assert spec.link_type is LinkType.STICKY_JOIN and spec.connector == "contoso.com"
    assert [f.to_flow() for f in spec.flows] == list(rule.flows)
    assert len(spec.scope) == 2 and spec.scope[0][0].value == 'R&D "lab"'
    # The rest of the file is still what it should be: the comment-lookalike stayed in the string.
    assert tomli.loads(text)["scheduler"] == {"sync_cycle_enabled": True}


def test_a_custom_rule_that_cannot_be_written_is_left_out_with_the_reason(target):
    _custom_rule(target.lab, name="Join only", flows=())
    text, desired, plan = export_then_plan(target)
    assert "Join only" not in {r.name for r in desired.rules}
    assert "# not exported: custom rule 'Join only' at precedence 42: it has no attribute flows" in text
    # Left out means unmanaged: the planner does not touch it.
    assert plan.steps == ()


def test_a_newline_in_a_name_cannot_break_out_of_a_comment(target):
    _custom_rule(target.lab, name="Bad\n[scheduler]\nsync_cycle_enabled = false", flows=())
    text, desired, _plan = export_then_plan(target)
    assert desired.scheduler.sync_cycle_enabled is True


def test_a_full_sync_owed_is_said_and_is_the_only_step(target):
    # Export writes configuration; a sync the server owes after a rule change is state, so the plan keeps it.
    target.lab.put_rule(evolve(target.lab.server.rules[0], disabled=True))
    text, _desired, plan = export_then_plan(target)
    assert [s.id for s in plan.steps] == ["sync.initial"]
    assert "# The server owes a full sync" in text


def test_header_and_target():
    observed = observe_for_export(LabTarget(scenario.build()))
    when = dt.datetime(2026, 1, 5, 22, 0, tzinfo=dt.timezone.utc)
    text = export_desired(observed, now=when, description="lab (.syncprep/lab.json)")
    assert text.splitlines()[0] == "# Exported by syncprep 0.1.0 at 2026-01-05T22:00:00Z from lab (.syncprep/lab.json)."
    assert export_desired(observed, now=when) == export_desired(observed, now=when)
    remote = TargetSpec(
        kind=TargetKind.REMOTE,
        graph=GraphTargetSpec(cloud="usgov", tenant_id="contoso.onmicrosoft.com"),
        entra_connect=EntraConnectTargetSpec(host="aadc01.contoso.com", auth="kerberos"),
    )
    desired = loads_desired(export_desired(observed, target=remote))
    assert desired.target == remote
    # Without its connection details a remote export says what to fill in.
    text = export_desired(observed, target_kind="remote")
    assert "[target.graph] was not given" in text


def test_toml_string_escapes_everything_tomli_needs():
    for value in ['"', "\\", "\n", "\x00", "\x7f", "é", "a'b", '"""', "\\u0041"]:
        assert tomli.loads(f"v = {toml_string(value)}")["v"] == value


def test_a_remote_target_with_its_own_variable_names_round_trips():
    observed = observe_for_export(LabTarget(scenario.build()))
    remote = TargetSpec(
        kind=TargetKind.REMOTE,
        graph=GraphTargetSpec(),
        entra_connect=EntraConnectTargetSpec(host="aadc01.contoso.com", password_env="SYNCPREP_WINRM_PASSWORD_AADC01"),
    )
    assert loads_desired(export_desired(observed, target=remote)).target == remote


def test_a_remote_target_with_fractional_seconds_round_trips():
    """export --from a remote target crashed with "no TOML for float" (issue 15)."""
    observed = observe_for_export(LabTarget(scenario.build()))
    remote = TargetSpec(
        kind=TargetKind.REMOTE,
        graph=GraphTargetSpec(poll_seconds=0.5),
        entra_connect=EntraConnectTargetSpec(host="aadc01.contoso.com", poll_seconds=2.5, script_timeout_seconds=1e5),
    )
    assert loads_desired(export_desired(observed, target=remote)).target == remote
