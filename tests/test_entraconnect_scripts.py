"""The scripts the Entra Connect provider generates, and the parsing of what comes back.

Golden files pin the scripts of the default scenario's Solution 1 (the KB article's
procedure); regenerate them with ``SYNCPREP_UPDATE_GOLDEN=1`` after an intended
change and review the diff. Every script the provider can generate must parse with
a real PowerShell grammar without an ERROR node.
"""

import json
import os
import re
import uuid
from pathlib import Path

import pytest
from attrs import evolve

from providers.entraconnect import PsrpServer, parse, scripts
from providers.lab import scenario
from providers.lab.provider import LabServer
from providers.lab.pwsh_interpreter import parse as parse_powershell
from reconciler.errors import ProviderError
from reconciler.model import (
    GUID_ATTRIBUTE,
    AttributeFlow,
    Direction,
    FlowType,
    JoinCondition,
    LinkType,
    MergeType,
    ScopeCondition,
    SyncPolicy,
    SyncRule,
)
from reconciler.operations import (
    CreateRule,
    RemoveRule,
    RunSyncCycle,
    SetContainerScope,
    SetDeletionThreshold,
    SetExcludedAttributes,
    SetRuleDisabled,
    SetScheduler,
    UpdateRule,
)

GOLDEN = Path(__file__).parent / "golden" / "entraconnect"
STOCK = "In from AD - User Exchange"


def solution1_operations(observed):
    """The article's Solution 1 for the stock User Exchange rule, built from observed rules.

    Scheduler off; disable the stock rule; add an editable copy at a free temporary
    precedence whose msExchMailboxGuid flow is Expression NULL, apply once; remove
    the original; give the copy the original's precedence; scheduler on; Initial cycle.
    """
    stock = observed.rules_named(STOCK)[0]
    taken = {r.precedence for r in observed.rules}
    temporary = next(p for p in range(200, 1000) if p not in taken)
    flows = tuple(
        AttributeFlow(GUID_ATTRIBUTE, FlowType.EXPRESSION, expression="NULL", execute_once=True) if f.destination == GUID_ATTRIBUTE else f
        for f in stock.flows
    )
    copy = evolve(
        stock,
        identifier=str(uuid.uuid5(uuid.NAMESPACE_URL, f"syncprep/copy/{STOCK}")),
        precedence=temporary,
        flows=flows,
        is_standard=False,
        immutable_tag="",
        disabled=False,
    )
    return [
        SetScheduler(False),
        SetRuleDisabled(stock.identifier, stock.name, True),
        CreateRule(copy),
        RemoveRule(stock.identifier, stock.name),
        UpdateRule(evolve(copy, precedence=stock.precedence)),
        SetScheduler(True),
        RunSyncCycle(SyncPolicy.INITIAL),
    ]


GOLDEN_NAMES = (
    "01-scheduler-off",
    "02-disable-stock-rule",
    "03-create-copy-at-temporary-precedence",
    "04-remove-original",
    "05-copy-takes-original-precedence",
    "06-scheduler-on",
    "07-initial-cycle",
)


@pytest.fixture(scope="module")
def lab():
    return scenario.build("default", users=8)


AAD_USER = "sync-admin@contoso.onmicrosoft.com"


def offline_server(observed, aad_username=AAD_USER):
    """A provider that knows ``observed`` as if it had just observed it: scripts are text,
    so no session is needed to generate them (plan --show-scripts after observing)."""
    provider = PsrpServer(session=None, poll_interval=10.0, aad_username=aad_username)
    provider._connectors = observed.connectors
    provider._remember(observed.rules)
    return provider


@pytest.fixture
def server(lab):
    return offline_server(LabServer(lab).observe())


@pytest.mark.parametrize("index,name", list(enumerate(GOLDEN_NAMES)), ids=GOLDEN_NAMES)
def test_golden_scripts_of_solution1(lab, server, index, name):
    # In plan order, as plan --show-scripts shows them: a step's script depends on the earlier steps.
    texts = [server.scripts_for(op) for op in solution1_operations(LabServer(lab).observe())]
    text = texts[index] + "\n"
    path = GOLDEN / f"{name}.ps1"
    if os.environ.get("SYNCPREP_UPDATE_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"missing golden file {path}; run with SYNCPREP_UPDATE_GOLDEN=1"
    assert text == path.read_text(encoding="utf-8"), f"GOT:\n{text}\nWANT:\n{path.read_text(encoding='utf-8')}"


def test_the_copy_script_is_the_editor_export_form(lab, server):
    copy = solution1_operations(LabServer(lab).observe())[2]
    text = server.scripts_for(copy)
    assert text.startswith("$ErrorActionPreference = 'Stop'\nImport-Module ADSync\nNew-ADSyncRule `\n")
    assert "-OutVariable syncRule" in text and "-SynchronizationRule $syncRule[0]" in text
    null_flow = (
        "Add-ADSyncAttributeFlowMapping `\n    -SynchronizationRule $syncRule[0] `\n    -Destination 'msExchMailboxGuid' `\n"
        "    -FlowType 'Expression' `\n    -ValueMergeType 'Update' `\n    -ExecuteOnce `\n    -Expression 'NULL' `\n    -OutVariable syncRule"
    )
    assert null_flow in text
    assert "New-Object Microsoft.IdentityManagement.PowerShell.ObjectModel.ScopeCondition -ArgumentList 'mailNickname','','ISNOTNULL' -OutVariable condition0" in text
    assert text.endswith("Add-ADSyncRule -SynchronizationRule $syncRule[0]")


def _every_script(lab, server):
    observed = LabServer(lab).observe()
    tricky = SyncRule(
        identifier="0d6c2f3e-8f43-4f5e-b1f4-6c1f0a1f2b3c",
        name="Custom 'quoted' rule `with` $dollars",
        direction=Direction.OUTBOUND,
        precedence=50,
        connector=observed.connectors[1].identifier,
        source_object_type="person",
        target_object_type="user",
        link_type=LinkType.JOIN_NO_FLOW,
        flows=(
            AttributeFlow("usageLocation", FlowType.CONSTANT, expression='"US"', merge_type=MergeType.REPLACE),
            AttributeFlow("displayName", FlowType.EXPRESSION, source="displayName", expression='Trim([displayName])', merge_type=MergeType.MERGE_CASE_INSENSITIVE),
        ),
        scope=((ScopeCondition("department", "EQUAL", "O'Brien"), ScopeCondition("mail", "ISNOTNULL")), (ScopeCondition("cloudFiltered", "NOTEQUAL", "True"),)),
        join=((JoinCondition("employeeID", "employeeID", True), JoinCondition("O'Name", "sAMAccountName")), (JoinCondition("mail", "mail"),)),
        disabled=True,
        description="It's $(dangerous)",
    )
    operations = solution1_operations(observed) + [
        SetScheduler(True),
        SetRuleDisabled(tricky.identifier, tricky.name, False),
        CreateRule(tricky),
        UpdateRule(tricky),
        UpdateRule(evolve(tricky, precedence=51, disabled=False)),
        UpdateRule(evolve(tricky, precedence=52, join=())),
        RemoveRule(tricky.identifier, tricky.name),
        RunSyncCycle(SyncPolicy.DELTA),
        SetContainerScope(("OU=Corp,DC=contoso,DC=com", "OU=Sales,DC=fabrikam,DC=com"), ("OU=Service Accounts,OU=Corp,DC=contoso,DC=com",)),
        SetContainerScope((), ()),
        SetExcludedAttributes(("msExchMailboxGuid", "usageLocation")),
        SetExcludedAttributes(()),
        SetExcludedAttributes(scripts.AAD_EXPORT_ATTRIBUTES),
        SetDeletionThreshold(None),
        SetDeletionThreshold(500),
    ]
    texts = [server.scripts_for(op) for op in operations]
    return texts + [
        scripts.observe(),
        scripts.observe(AAD_USER),
        scripts.PRECHECK,
        scripts.precheck_rule(tricky.identifier),
        scripts.POLL_CYCLE,
        scripts.start_cycle(SyncPolicy.INITIAL),
    ]


def test_every_script_parses_with_a_powershell_grammar(lab, server):
    texts = _every_script(lab, server)
    assert len(texts) > 20
    for text in texts:
        parse_powershell(text)  # raises on an ERROR node
        assert text.startswith("$ErrorActionPreference = 'Stop'\nImport-Module ADSync\n")
        assert "&&" not in text and "??" not in text and "EnumsAsStrings" not in text


def test_a_broken_script_does_not_parse():
    from providers.lab.pwsh_interpreter import ScriptError

    with pytest.raises(ScriptError, match="does not parse"):
        parse_powershell("New-ADSyncRule -Name 'unterminated")


def test_quoting_keeps_literals_literal():
    assert scripts.quote("O'Brien $x `n") == "'O''Brien $x `n'"


# ---------------------------------------------------------------------- parsing what 5.1 emits


def _rule_json(direction, link, flow_type, merge, operator):
    return {
        "Identifier": "8b8a8fcd-99da-5da9-8b24-eda6b6801c80",
        "Name": "In from AD - User Common",
        "Description": None,
        "Direction": direction,
        "Precedence": 103,
        "Connector": "c61dd535-08eb-5056-93c7-f80fa13a1dbf",
        "SourceObjectType": "user",
        "TargetObjectType": "person",
        "LinkType": link,
        "Disabled": False,
        "IsStandardRule": True,
        "ImmutableTag": "Microsoft.InfromADUserCommon.004",
        "Flows": {"Source": "displayName", "Destination": "displayName", "FlowType": flow_type, "Expression": None, "ExecuteOnce": False, "ValueMergeType": merge},
        "Scope": [{"Conditions": [{"Attribute": "mailNickname", "Operator": operator, "Value": None}]}],
    }


def test_enums_as_integers_or_names_parse_the_same():
    as_ints = parse.rule(_rule_json(0, 2, 0, 0, 13), 0)
    as_names = parse.rule(_rule_json("Inbound", "Join", "Direct", "Update", "ISNOTNULL"), 0)
    assert as_ints == as_names
    assert as_ints.direction is Direction.INBOUND and as_ints.link_type is LinkType.JOIN
    assert as_ints.flows == (AttributeFlow("displayName", FlowType.DIRECT, source="displayName"),)
    assert as_ints.scope == ((ScopeCondition("mailNickname", "ISNOTNULL", ""),),)
    with pytest.raises(ProviderError, match="unknown Direction value 7"):
        parse.rule(_rule_json(7, 2, 0, 0, 13), 0)


def test_dates_as_ms_json_or_iso():
    assert parse.timestamp("/Date(1767650400000)/") == "2026-01-05T22:00:00Z"
    assert parse.timestamp("2026-01-05T23:00:00.1234567+01:00") == "2026-01-05T22:00:00Z"


def test_truncated_output_is_reported_not_guessed():
    document = {
        "Scheduler": {"SyncCycleEnabled": True, "StagingModeEnabled": False, "SyncCycleInProgress": False, "NextSyncCyclePolicyType": 1},
        "Rules": [dict(_rule_json(0, 2, 0, 0, 13), Scope=[{"Conditions": "@{Attribute=mailNickname; Operator=13; Value=}"}])],
    }
    with pytest.raises(parse.Truncated, match="truncated at ConvertTo-Json's -Depth"):
        parse.server_state(json.loads(json.dumps(document)))
    document["Rules"] = "System.Object[]"
    with pytest.raises(parse.Truncated):
        parse.server_state(document)


def test_disabled_or_unreadable_deletion_threshold_is_unknown():
    assert parse.deletion_threshold(None) is None
    assert parse.deletion_threshold({"ThresholdCount": 0, "ThresholdPercentage": 0}) is None
    assert parse.deletion_threshold({"ThresholdCount": 500, "ThresholdPercentage": 0}) == 500


def test_scripts_for_a_cycle_shows_the_start_and_the_wait(server):
    text = server.scripts_for(RunSyncCycle(SyncPolicy.INITIAL))
    assert "Start-ADSyncSyncCycle -PolicyType Initial" in text
    assert "Get-ADSyncRunProfileResult -ConnectorId $connector.Identifier" in text


def test_join_groups_parse_from_what_5_1_writes():
    data = dict(
        _rule_json(0, 2, 0, 0, 13),
        Join=[
            {"Conditions": [{"CSAttribute": "mS-DS-ConsistencyGuid", "MVAttribute": "sourceAnchorBinary", "CaseSensitive": False}]},
            {"Conditions": {"CSAttribute": "objectGUID", "MVAttribute": "sourceAnchorBinary", "CaseSensitive": True}},
        ],
    )
    assert parse.rule(data, 0).join == (
        (JoinCondition("mS-DS-ConsistencyGuid", "sourceAnchorBinary", False),),
        (JoinCondition("objectGUID", "sourceAnchorBinary", True),),
    )
    assert parse.rule(_rule_json(0, 2, 0, 0, 13), 0).join == ()
    with pytest.raises(parse.Truncated):
        parse.rule(dict(data, Join=[{"Conditions": "@{CSAttribute=objectGUID; MVAttribute=sourceAnchorBinary; CaseSensitive=True}"}]), 0)


def test_an_update_without_a_reading_of_the_rule_rebuilds_it(lab):
    # No observation yet: the provider cannot know that only the precedence changes.
    blind = PsrpServer(session=None)
    copy = solution1_operations(LabServer(lab).observe())[4]
    assert "New-ADSyncRule" in blind.scripts_for(copy)
    assert scripts.edited_fields(None, copy.rule) is None
    assert scripts.edited_fields(copy.rule, evolve(copy.rule, precedence=1, disabled=True)) == ("precedence", "disabled")
    assert scripts.edited_fields(copy.rule, evolve(copy.rule, precedence=1, flows=())) is None


# ---------------------------------------------------------------------- quoting, run by the lab's PowerShell


class _Sink:
    def __init__(self):
        self.out = []

    def output(self, value):
        self.out.append(value)

    def error(self, message, error_id=None):
        raise AssertionError(message)


def _echo(literal):
    from providers.lab.host import LabHost
    from providers.lab.pwsh_interpreter import Interpreter

    sink = _Sink()
    Interpreter(LabHost(scenario.build("default", users=4)), sink).run(f"[pscustomobject]@{{ V = {literal} }} | ConvertTo-Json -Compress")
    return json.loads(sink.out[-1])["V"]


@pytest.mark.parametrize("char", ["'", "\u2018", "\u2019", "\u201a", "\u201b"])
def test_every_single_quote_character_is_doubled_and_round_trips(char):
    value = f"O{char}Brien {char}; Remove-ADSyncRule {char}"
    assert scripts.quote(value) == "'" + value.replace(char, char * 2) + "'"
    assert _echo(scripts.quote(value)) == value


@pytest.mark.parametrize("char", ["\u2018", "\u2019", "\u201a", "\u201b"])
def test_the_lab_refuses_a_smart_quote_left_single(char):
    from providers.lab.pwsh_interpreter import ScriptError

    with pytest.raises(ScriptError, match=f"U\\+{ord(char):04X} ends the string"):
        _echo(f"'O{char}Brien'")


def _observed_json(aad_username=None):
    from providers.lab.host import LabHost
    from providers.lab.pwsh_interpreter import Interpreter

    sink = _Sink()
    Interpreter(LabHost(scenario.build("default", users=4)), sink).run(scripts.observe(aad_username))
    return json.loads(sink.out[-1])


def test_the_observation_writes_enums_as_names_not_numbers():
    document = _observed_json()
    assert document["Scheduler"]["NextSyncCyclePolicyType"] in ("Delta", "Initial")
    rules = document["Rules"]
    assert {r["Direction"] for r in rules} == {"Inbound", "Outbound"}
    assert {r["LinkType"] for r in rules} <= {"Provision", "StickyJoin", "Join", "JoinNoFlow"}
    flows = [f for r in rules for f in r["Flows"]]
    assert flows and all(f["FlowType"] in ("Direct", "Constant", "Expression") for f in flows)
    assert all(f["ValueMergeType"] in ("Update", "Replace", "MergeCaseInsensitive", "Merge") for f in flows)
    operators = [c["Operator"] for r in rules for g in r["Scope"] for c in g["Conditions"]]
    assert operators and all(isinstance(o, str) and o.isupper() for o in operators)
    # ...and they read back as the lab's own rules.
    assert parse.server_state(document).rules == tuple(LabServer(scenario.build("default", users=4)).observe().rules)


def test_enum_numbers_are_still_read_as_a_fallback():
    assert parse.enum(None, 13, "here", parse.COMPARISON_OPERATORS) == "ISNOTNULL"
    assert parse._enum_member(Direction, 1, "here") is Direction.OUTBOUND


# ---------------------------------------------------------------------- flows with several sources


class _Observed:
    """A session that answers the observation (and the pre-check) with ``document``."""

    def __init__(self, document):
        self.document = document
        self.changes = []

    def invoke(self, script, resource="script", json_output=True):
        if "DeletionThreshold = $threshold" in script or ("Connectors = @(" in script and "Rules = @(" in script):
            return self.document
        if "Get-ADSyncScheduler" in script and "RuleIdentifiers" in script:
            rules = self.document["Rules"]
            answer = {"SyncCycleInProgress": False, "StagingModeEnabled": False, "RuleIdentifiers": [r["Identifier"] for r in rules]}
            answer["Rule"] = [r for r in rules if r["Identifier"] in script]
            return answer
        if "Rule = @(foreach ($rule in @(Get-ADSyncRule))" in script:  # a read-back
            return {"Rule": [r for r in self.document["Rules"] if f"-eq '{r['Identifier']}'" in script]}
        self.changes.append(script)
        edited = re.search(r"Get-ADSyncRule -Identifier '([^']+)'\n\$syncRule.Precedence = (\d+)", script)
        if edited:  # a targeted edit: the fake server takes it
            rule = next(r for r in self.document["Rules"] if r["Identifier"] == edited.group(1))
            rule["Precedence"] = int(edited.group(2))
        return None

    def close(self):
        pass


def _with_two_sources():
    document = _observed_json(AAD_USER)
    stock = next(r for r in document["Rules"] if r["Name"] == STOCK)
    flow = next(f for f in stock["Flows"] if f["Destination"] == "usageLocation")
    flow.update(Source=["msExchUsageLocation", "c"], FlowType="Expression", Expression='IIF(IsPresent([msExchUsageLocation]),[msExchUsageLocation],[c])')
    return document


def test_a_flow_with_several_sources_keeps_them_all_in_a_rewrite():
    # The model carries every source of a flow: the copy of the stock rule writes them all,
    # where it used to be refused mid-apply, after the stock rule was disabled.
    provider = PsrpServer(_Observed(_with_two_sources()), aad_username=AAD_USER)
    observed = provider.observe()
    flow = observed.rules_named(STOCK)[0].flows_to("usageLocation")[0]
    assert flow.sources == ("msExchUsageLocation", "c")
    create = next(op for op in solution1_operations(observed) if isinstance(op, CreateRule))
    assert "    -Source @('msExchUsageLocation', 'c') `\n    -Destination 'usageLocation' `" in provider.scripts_for(create)


def test_rules_with_single_source_flows_are_rewritten_as_before():
    provider = PsrpServer(_Observed(_observed_json(AAD_USER)), aad_username=AAD_USER)
    create = next(op for op in solution1_operations(provider.observe()) if isinstance(op, CreateRule))
    assert "New-ADSyncRule" in provider.scripts_for(create)
