"""Rewriting and copying rules over real PSRP keeps what the server's rule holds.

Constant flows carry their constant as their source (the Rules Editor's export form),
a flow with several sources keeps them all, and a copy keeps password hash sync.
"""

import pytest
from attrs import evolve

from conftest import EXAMPLE
from providers.lab import scenario
from providers.lab.provider import LabTenant
from reconciler.apply import apply_plan, observe
from reconciler.errors import PlanError
from reconciler.loader import load_desired
from reconciler.model import AttributeFlow, FlowType, ScopeCondition
from reconciler.operations import CreateRule
from reconciler.plan import build_plan
from reconciler.provider import Target
from reconciler.rules import copy_identifier

STOCK = "In from AD - User Exchange"


def _change_stock(lab, **changes):
    for rules in (lab.server.rules, lab.server.stock_catalogue):
        index = next(i for i, r in enumerate(rules) if r.name == STOCK)
        rules[index] = evolve(rules[index], **changes)


def _apply_example(lab, server):
    desired = load_desired(EXAMPLE)
    target = Target(server, LabTenant(lab))
    plan = build_plan(desired, observe(target, desired), "served lab")
    report = apply_plan(plan, desired, target, approvals=frozenset(plan.approvals_needed), force=True)
    return plan, report


def test_a_constant_flow_is_written_with_its_constant_as_source(served):  # noqa: F811
    lab, endpoint, server = served()
    observed = server.observe()
    ad = observed.connectors_of_kind("AD")[0]
    stock = observed.rules_named(STOCK)[0]
    flows = (AttributeFlow("extensionAttribute15", FlowType.CONSTANT, expression="migrated"),)
    rule = evolve(stock, identifier=copy_identifier("constant"), name="In from AD - User Constant", precedence=60, flows=flows, is_standard=False, immutable_tag="", connector=ad.identifier)
    outcome = server.apply(CreateRule(rule))
    assert "-Source @('migrated') `\n    -Destination 'extensionAttribute15' `\n    -FlowType 'Constant'" in endpoint.scripts[-2]
    assert outcome.detail.startswith("read back: precedence 60")
    assert server.observe().rule_by_id(rule.identifier).flows == flows
    assert next(r for r in lab.server.rules if r.identifier == rule.identifier).flows == flows


def test_a_stock_rule_with_a_multi_source_flow_is_copied_with_every_source(served):  # noqa: F811
    lab = scenario.build("default", users=8)
    several = AttributeFlow(
        "cloudMastered", FlowType.EXPRESSION, source="msExchRecipientTypeDetails", other_sources=("msExchRemoteRecipientType",),
        expression='IIF(IsPresent([msExchRemoteRecipientType]),"true","false")',
    )
    stock = next(r for r in lab.server.rules if r.name == STOCK)
    _change_stock(lab, flows=stock.flows + (several,))
    lab, _endpoint, server = served(lab)
    _plan, report = _apply_example(lab, server)
    assert report.ok, report.results
    copy = next(r for r in lab.server.rules if r.name == STOCK)
    assert not copy.is_standard and several in copy.flows


def test_a_copy_of_a_rule_with_password_sync_keeps_it(served):  # noqa: F811
    lab = scenario.build("default", users=8)
    _change_stock(lab, password_sync=True)
    lab, _endpoint, server = served(lab)
    assert server.observe().rules_named(STOCK)[0].password_sync
    _plan, report = _apply_example(lab, server)
    assert report.ok, report.results
    copy = next(r for r in lab.server.rules if r.name == STOCK)
    assert not copy.is_standard and copy.password_sync


def test_a_rewrite_that_drops_password_sync_is_refused_at_plan_time():
    from reconciler.rules import refuse_losing_password_sync

    stock = next(r for r in scenario.stock_rules() if r.name == STOCK)
    stock = evolve(stock, password_sync=True, scope=((ScopeCondition("mailNickname", "ISNOTNULL"),),))
    with pytest.raises(PlanError, match="carries password hash sync .* would stop password hash sync for every user it covers"):
        refuse_losing_password_sync(stock, evolve(stock, password_sync=False))
    refuse_losing_password_sync(stock, stock)


CUSTOM_WITH_SCOPE = """
[[rules]]
name = "Custom - In from AD - User Disabled Flag"
kind = "custom"
precedence = 80
source_object_type = "user"
scope = [[{{ attribute = "userAccountControl", operator = "{operator}", value = "2" }}]]

  [[rules.flows]]
  destination = "extensionAttribute14"
  flow_type = "Constant"
  expression = "enabled"
"""


def test_the_real_isbitnotset_operator_is_accepted_and_applied(served, tmp_path):  # noqa: F811
    from reconciler.errors import ConfigError

    wrong = tmp_path / "wrong.toml"
    wrong.write_text(CUSTOM_WITH_SCOPE.format(operator="ISNOTBITSET"))
    with pytest.raises(ConfigError, match=r"operator: must be one of EQUAL, .*ISBITSET, ISBITNOTSET, .* \(got 'ISNOTBITSET'\)"):
        load_desired(wrong)
    right = tmp_path / "right.toml"
    right.write_text(CUSTOM_WITH_SCOPE.format(operator="ISBITNOTSET"))
    desired = load_desired(right)
    lab, _endpoint, server = served()
    target = Target(server, LabTenant(lab))
    plan = build_plan(desired, observe(target, desired), "served lab")
    create = next(s for s in plan.steps if isinstance(s.operation, CreateRule))
    outcome = server.apply(create.operation)
    assert outcome.detail.startswith("read back: precedence 80, enabled, 1 flow(s), 1 scope group(s)")
    rule = next(r for r in lab.server.rules if r.name == "Custom - In from AD - User Disabled Flag")
    assert rule.scope == ((ScopeCondition("userAccountControl", "ISBITNOTSET", "2"),),)
    assert not [s for s in build_plan(desired, observe(target, desired), "served lab").steps if s.resource.startswith("rule/")]


def test_an_expression_flow_names_every_source_it_reads(tmp_path):
    from reconciler.errors import ConfigError

    body = (
        '[[rules]]\nname = "Custom - proxy"\nkind = "custom"\nprecedence = 81\nsource_object_type = "user"\n\n'
        '  [[rules.flows]]\n  destination = "proxyAddresses"\n  flow_type = "{flow_type}"\n  {value}\n  sources = ["proxyAddresses", "mail"]\n'
    )
    good = tmp_path / "good.toml"
    good.write_text(body.format(flow_type="Expression", value='expression = "IIF(IsPresent([proxyAddresses]),[proxyAddresses],[mail])"'))
    flow = load_desired(good).rules[0].flows[0].to_flow()
    assert flow.sources == ("proxyAddresses", "mail")
    bad = tmp_path / "bad.toml"
    bad.write_text(body.format(flow_type="Direct", value='source = "mail"'))
    with pytest.raises(ConfigError, match="a Direct flow takes one source"):
        load_desired(bad)
