"""A person joined from two forests meets the rules of both connectors in ONE precedence order
(review 4, F2; domain-facts A4/A5), as the lab's sync engine evaluates them: an AuthoritativeNull
of one connector at 90 stops the other connector's stock rule at 128. The plan said
"fabrikam.com's rules bring msExchMailboxGuid" and never licensed such users, while the lab
cleared the GUID."""

import pytest

from conftest import UPGRADE_SAFE
from providers.lab import scenario
from providers.lab.provider import LabTarget
from reconciler.apply import apply_plan, observe
from reconciler.loader import loads_desired
from reconciler.outcome import ACTS
from reconciler.plan import build_plan

LINKED = tuple(f"{sam}@contoso.com" for sam in scenario.LINKED_USERS)


@pytest.mark.parametrize("connector", ["contoso.com", "fabrikam.com"])
def test_an_authoritative_null_on_one_connector_outranks_the_joined_connectors_stock_rule(connector):
    text = UPGRADE_SAFE.read_text().replace('kind = "custom"\n', f'kind = "custom"\nconnector = "{connector}"\n')
    desired = loads_desired(text, "upgrade-safe.toml")
    lab = scenario.build("resource-forest")
    target = LabTarget(lab)
    plan = build_plan(desired, observe(target, desired), "lab")
    outcomes = {o.upn: o for o in plan.outcomes}
    for upn in LINKED:
        assert outcomes[upn].verdict in ACTS, outcomes[upn]
    apply_plan(plan, desired, target, approvals=frozenset(plan.approvals_needed), force=True)
    for upn in LINKED:
        cloud = lab.cloud_user(upn)
        assert cloud.mailbox_guid is None and lab.mailbox_state(cloud) == "present", upn


def test_a_stock_rule_that_outranks_the_other_connectors_authoritative_null_still_holds_the_user():
    """The same order the other way: fabrikam's custom rule at 190 (below its stock rule at 128)
    stops nothing, and the joined users are not licensed."""
    text = UPGRADE_SAFE.read_text().replace('kind = "custom"\n', 'kind = "custom"\nconnector = "fabrikam.com"\n')
    text = text.replace("precedence = 90", "precedence = 190").replace("precedence = 91", "precedence = 191")
    desired = loads_desired(text, "upgrade-safe.toml")
    plan = build_plan(desired, observe(LabTarget(scenario.build("resource-forest")), desired), "lab")
    outcomes = {o.upn: o for o in plan.outcomes}
    for upn in LINKED:
        assert outcomes[upn].verdict not in ACTS, outcomes[upn]
        assert "in one precedence order" in outcomes[upn].reason or outcomes[upn].code == "guid-stays"
