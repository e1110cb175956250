"""A single-forest scope change whose connector space could not be counted (the read failed, or
was incomplete) said only "could not be counted": the plan's scope-objects-unknown notice now
carries the read's error and names the Lab assumption the completeness check rests on
(Get-ADSyncConnectorStatistics' TotalConnectors counts the objects the paged Get-ADSyncCSObject
listing shows with IsConnector), as the several-forest notices do (dfe9705)."""

from conftest import plan_for
from test_joins_text import _Failing  # a lab whose connector-space read fails, with a secret in its error
from providers.lab import scenario
from providers.lab.provider import LabTenant
from reconciler.loader import loads_desired
from reconciler.provider import Target

ASSUMPTION = "Lab assumption: Get-ADSyncConnectorStatistics' TotalConnectors counts the objects the paged Get-ADSyncCSObject listing shows with IsConnector"

OU_OUT = loads_desired(
    """
[target]
kind = "lab"

[scope]
included = ["OU=Corp,DC=contoso,DC=com"]
excluded = ["OU=HybridUsers,OU=Corp,DC=contoso,DC=com"]
""",
    "scope-out.toml",
)


def _unknown(plan):
    (notice,) = [n.message for n in plan.notices if n.code == "scope-objects-unknown"]
    return notice


def test_a_failed_read_is_said_with_its_error_and_the_assumption():
    notice = _unknown(plan_for(OU_OUT, _Failing(scenario.build("default", users=8))))
    assert "could not be counted: entra-connect: connector space: Get-ADSyncCSObject failed" in notice
    assert "Hunter2-Secret-Value" not in notice
    assert ASSUMPTION in notice
    assert "the export deletion threshold is compared with the" in notice and "a lower bound" in notice


def test_an_incomplete_read_of_one_forest_is_said_with_the_statistics_it_disagreed_with(served, monkeypatch):
    from providers.entraconnect import scripts

    lab, _endpoint, server = served(scenario.build("default", users=8))
    whole = scripts.connector_space_page
    monkeypatch.setattr(scripts, "connector_space_page", lambda identifier, start, count=None, joins=False: whole(identifier, start, min(count or scripts.CS_PAGE, 8), joins))
    notice = _unknown(plan_for(OU_OUT, Target(server, LabTenant(lab))))
    assert "but Get-ADSyncConnectorStatistics counts" in notice and "(TotalConnectors): the read is incomplete" in notice
    assert ASSUMPTION in notice


def test_the_purge_bracket_says_it_too():
    from conftest import ROOT

    notice = _unknown(plan_for(ROOT / "desired-state" / "rebuild.toml", _Failing(scenario.build("default", users=8))))
    assert "Get-ADSyncCSObject failed" in notice and ASSUMPTION in notice
