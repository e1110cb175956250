"""The lab refuses what the real ADSync module refuses, and every script the provider
can emit runs in it without a refusal.

The interpreter checks every call against the module's surface (providers/lab/
adsync_signatures.json, from build 2.2.8.0): unknown cmdlets and parameters, parameters
of sets that do not go together, missing mandatory parameters, bad enum values, unknown
and read-only properties; and behaves like .NET where it matters.
"""


import pytest
from attrs import evolve

from conftest import EXAMPLE, ROOT, UPGRADE_SAFE
from providers.entraconnect import scripts
from providers.lab import scenario, signatures
from providers.lab.provider import LabTenant
from reconciler.apply import apply_plan, observe
from reconciler.errors import ProviderError
from reconciler.loader import load_desired
from reconciler.model import AttributeFlow, FlowType, JoinCondition, ScopeCondition, SyncPolicy
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
from reconciler.plan import build_plan
from reconciler.provider import Target
from reconciler.rules import copy_identifier

REBUILD = ROOT / "desired-state" / "rebuild.toml"
TWO_FORESTS = ROOT / "desired-state" / "two-forests.toml"
EXAMPLES = [("default", EXAMPLE), ("default", UPGRADE_SAFE), ("default", REBUILD)]
# Several AD connectors: per-connector rule copies, scope changes and connector-space reads (a custom
# rule, as upgrade-safe.toml writes them, names its one connector: there it needs connector = "...").
EXAMPLES += [("two-forest", EXAMPLE), ("two-forest", REBUILD), ("two-forest", TWO_FORESTS)]


@pytest.mark.parametrize("name,path", EXAMPLES, ids=[f"{n}-{p.name}" for n, p in EXAMPLES])
def test_every_script_of_the_example_files_runs_without_a_refusal(served, name, path):
    desired = load_desired(path)
    lab, endpoint, server = served(scenario.build(name, users=20))
    target = Target(server, LabTenant(lab))
    plan = build_plan(desired, observe(target, desired), "served lab")
    shown = [server.scripts_for(s.operation) for s in plan.steps if type(s.operation) in server.SUPPORTS]
    report = apply_plan(plan, desired, target, approvals=frozenset(plan.approvals_needed), force=True)
    failed = [r for r in report.results if r.status.value != "done"]
    assert not failed, failed
    ran = endpoint.scripts
    assert all(text in ran for text in shown if "Start-ADSyncSyncCycle" not in text)
    assert all(s.startswith("$ErrorActionPreference = 'Stop'\nImport-Module ADSync\n") for s in ran)
    if desired.purge is not None or desired.scope is not None:
        assert any("Get-ADSyncCSObject" in s for s in ran), "the connector space was counted"
    if name == "two-forest":
        again = build_plan(desired, observe(target, desired), "served lab")
        assert not again.steps, [s.id for s in again.steps]


def test_per_connector_changes_on_two_forests_run_without_a_refusal(served):
    lab, endpoint, server = served(scenario.build("two-forest", users=8))
    fabrikam = scenario.FABRIKAM_CONNECTOR
    operations = [
        SetContainerScope((scenario.FABRIKAM_TOP,), (scenario.FABRIKAM_OU,), fabrikam),
        SetContainerScope((scenario.FABRIKAM_TOP,), (), fabrikam),
        SetContainerScope(("OU=Corp,DC=contoso,DC=com",), (), scenario.AD_CONNECTOR),
    ]
    for operation in operations:
        shown = server.scripts_for(operation)
        assert server.apply(operation).detail.startswith("read back:")
        assert shown in endpoint.scripts and f"-Identifier '{operation.connector}'" in shown
    assert lab.connector(fabrikam).included_containers == (scenario.FABRIKAM_TOP,)
    assert server.count_objects()
    assert all(s.startswith("$ErrorActionPreference = 'Stop'\nImport-Module ADSync\n") for s in endpoint.scripts)


def test_every_other_kind_of_change_runs_without_a_refusal(served):
    lab, endpoint, server = served(users=20)
    observed = server.observe()
    ad = observed.connectors_of_kind("AD")[0]
    stock = observed.rules_named("In from AD - User Exchange")[0]
    flows = (
        AttributeFlow("extensionAttribute15", FlowType.CONSTANT, expression="migrated"),
        AttributeFlow("msExchMailboxGuid", FlowType.EXPRESSION, expression="AuthoritativeNull", merge_type=stock.flows[0].merge_type),
        AttributeFlow("cloudMastered", FlowType.EXPRESSION, source="a", other_sources=("b",), expression='IIF(IsPresent([a]),"x","y")', execute_once=True),
        AttributeFlow("displayName", FlowType.DIRECT, source="displayName"),
    )
    custom = evolve(
        stock, identifier=copy_identifier("strict"), name="Custom - strict", precedence=70, flows=flows, is_standard=False, immutable_tag="", connector=ad.identifier,
        scope=((ScopeCondition("userAccountControl", "ISBITNOTSET", "2"), ScopeCondition("mailNickname", "ISNOTNULL")), (ScopeCondition("company", "EQUAL", "O'Brien & Co"),)),
        join=((JoinCondition("mS-DS-ConsistencyGuid", "sourceAnchorBinary"),), (JoinCondition("objectGUID", "sourceAnchorBinary", True),)),
    )
    operations = [
        SetScheduler(False),
        CreateRule(custom),
        UpdateRule(evolve(custom, precedence=71)),  # targeted
        UpdateRule(evolve(custom, precedence=71, description="rewritten", flows=flows[:2])),  # whole rule, from the server's own
        SetRuleDisabled(custom.identifier, custom.name, True),
        CreateRule(evolve(stock, identifier=copy_identifier("copy"), name=stock.name, precedence=72, is_standard=False, immutable_tag=""), copy_of=stock.identifier),
        RemoveRule(custom.identifier, custom.name),
        SetContainerScope(("OU=Corp,DC=contoso,DC=com",), ("OU=ServiceAccounts,OU=Corp,DC=contoso,DC=com",)),
        SetExcludedAttributes(("msexchmailboxguid",)),
        SetExcludedAttributes(()),
        SetDeletionThreshold(1500),  # the raise
        SetDeletionThreshold(500),  # and the restore
        SetDeletionThreshold(None),
        SetDeletionThreshold(500),
        SetScheduler(True),
        RunSyncCycle(SyncPolicy.DELTA),
    ]
    for operation in operations:
        shown = server.scripts_for(operation)
        outcome = server.apply(operation)
        assert outcome.detail, operation
        if not isinstance(operation, RunSyncCycle):
            assert shown in endpoint.scripts, operation
    assert all(s.startswith("$ErrorActionPreference = 'Stop'\nImport-Module ADSync\n") for s in endpoint.scripts)


STRICT = [
    # unknown cmdlet / parameter
    ("Set-ADSyncRule -Identifier '00000000-0000-0000-0000-000000000001'", "The term 'Set-ADSyncRule' is not recognized"),
    ("Get-ADSyncRule -Name 'x'", "A parameter cannot be found that matches parameter name 'Name'"),
    ("Add-ADSyncRule -SynchronizationRule $null -PreviousTag 'x'", "A parameter cannot be found that matches parameter name 'PreviousTag'"),
    # missing mandatory parameter, wrong set
    ("New-ADSyncRule -Name 'x' -Direction 'Inbound' -SourceObjectType 'user' -TargetObjectType 'person' -LinkType 'Join'", "missing mandatory parameters: Connector"),
    ("Remove-ADSyncRule", "missing mandatory parameters"),
    ("$r = @(Get-ADSyncRule)[0]\nRemove-ADSyncRule -Identifier $r.Identifier -SynchronizationRule $r", "Parameter set cannot be resolved"),
    # bad enum values
    ("Start-ADSyncSyncCycle -PolicyType Full", "Specify one of the following enumerator names and try again: Unspecified, Delta, Initial"),
    ("New-ADSyncRule -Name 'x' -Direction 'In' -Connector '00000000-0000-0000-0000-000000000001' -SourceObjectType 'user' -TargetObjectType 'person' -LinkType 'Join'", "Inbound, Outbound"),
    ("New-ADSyncRule -Name 'x' -Direction 'Inbound' -Connector '00000000-0000-0000-0000-000000000001' -SourceObjectType 'user' -TargetObjectType 'person' -LinkType 'Projection'", "Provision, StickyJoin, Join, JoinNoFlow"),
    # unknown and read-only properties
    ("$r = @(Get-ADSyncRule)[0]\n$r.Enabled = $true", "The property 'Enabled' cannot be found"),
    ("$r = @(Get-ADSyncRule)[0]\n$r.IsStandardRule = $false", "'IsStandardRule' is a ReadOnly property"),
    ("$r = @(Get-ADSyncRule)[0]\n$x = $r.PreviousTag", "The property 'PreviousTag' cannot be found"),
]


@pytest.mark.parametrize("script,expected", STRICT, ids=[s[1][:40] for s in STRICT])
def test_the_lab_refuses_what_adsync_refuses(served, script, expected):
    _lab, _endpoint, server = served(scenario.build("default", users=4))
    with pytest.raises(ProviderError) as err:
        server.session.invoke("$ErrorActionPreference = 'Stop'\nImport-Module ADSync\n" + script, "probe", json_output=False)
    assert expected in str(err.value)


def test_list_of_string_remove_is_case_sensitive_and_says_so(served):
    lab, _endpoint, server = served(scenario.build("default", users=4))
    aad = lab.aad_connector().identifier
    script = (
        "$ErrorActionPreference = 'Stop'\nImport-Module ADSync\n"
        f"$connector = Get-ADSyncConnector -Identifier '{aad}'\n"
        "[pscustomobject]@{\n"
        "    Other = $connector.AttributeInclusionList.Remove('msexchmailboxguid')\n"
        "    Same = $connector.AttributeInclusionList.Remove('msExchMailboxGuid')\n"
        "    Contains = $connector.AttributeInclusionList -contains 'MSEXCHUSAGELOCATION'\n"
        "} | ConvertTo-Json -Compress"
    )
    assert server.session.invoke(script, "probe") == {"Other": False, "Same": True, "Contains": False}


def test_the_enums_are_the_modules_own():
    from providers.lab.pwsh_interpreter import ENUMS
    from reconciler.model import COMPARISON_OPERATORS, Direction, FlowType, LinkType, MergeType

    assert COMPARISON_OPERATORS == signatures.enum_values("ComparisonOperator")
    assert ENUMS["FlowType"] == signatures.enum_values("AttributeMappingFlowType") == tuple(m.value for m in FlowType)
    assert ENUMS["ValueMergeType"] == signatures.enum_values("AttributeValueMergeType")
    assert set(ENUMS["ValueMergeType"]) == {m.value for m in MergeType}
    assert ENUMS["LinkType"] == signatures.enum_values("SyncRuleLinkType")
    assert set(ENUMS["LinkType"]) == {m.value for m in LinkType}
    assert ENUMS["Direction"] == signatures.enum_values("SynchronizationRuleDirection") == tuple(m.value for m in Direction)
    assert ENUMS["PolicyType"] == signatures.enum_values("SynchronizationPolicyType")
    assert scripts.PREAMBLE.endswith("Import-Module ADSync")
