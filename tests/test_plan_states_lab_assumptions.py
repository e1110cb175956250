"""The plan says the Lab assumptions it relies on (final read B, B3; final read C, C3): what
Get-ADSyncConnectorStatistics' TotalConnectors counts (it decides whether a connector-space read
is complete), and the lab's resource-forest simulation (a linked mailbox only joins; while its
account is out of scope it stays unjoined). They were said in code and README only."""

from conftest import EXAMPLE, plan_for
from providers.lab import scenario
from providers.lab.provider import LabTarget
from reconciler.loader import loads_desired


def _both_on(connector):
    text = EXAMPLE.read_text().replace('kind = "replacement"\n', f'kind = "replacement"\nconnector = "{connector}"\n')
    return loads_desired(text, f"{connector}.toml")


def test_the_metaverse_joins_notice_states_the_total_connectors_and_resource_forest_assumptions():
    plan = plan_for(_both_on("contoso.com"), LabTarget(scenario.build("resource-forest", users=8)))
    (notice,) = [n.message for n in plan.notices if n.code == "metaverse-joins"]
    assert "Lab assumption: Get-ADSyncConnectorStatistics' TotalConnectors counts the objects that listing shows with IsConnector" in notice
    assert "a linked mailbox only joins the person of its account (by msExchMasterAccountSid)" in notice
    assert "while that account is out of every scope it stays unjoined" in notice


def test_an_incomplete_read_names_the_assumption_it_rests_on(served, monkeypatch):
    from providers.entraconnect import scripts

    _lab, _endpoint, server = served(scenario.build("resource-forest", users=8))
    whole = scripts.connector_space_page
    monkeypatch.setattr(scripts, "connector_space_page", lambda identifier, start, count=None, joins=False: whole(identifier, start, min(count or scripts.CS_PAGE, 8), joins))
    assert server.connector_space(joins=True) is None
    assert "(Lab assumption: TotalConnectors counts the objects the listing shows with IsConnector)" in server.connector_space_error
