"""With one AD connector the joins cost nothing (review 4, F3): the connector-space pages read
over PSRP carry no ConnectedMVObjectId (about 46% more JSON at 100,000 objects, and one odd
value refused the whole read), and the joins keep only persons (user, inetOrgPerson)."""

from conftest import ROOT
from providers.entraconnect import parse
from providers.lab import scenario
from providers.lab.provider import LabTarget
from reconciler.joins import survey


def test_one_ad_connector_reads_no_metaverse_ids(served):
    lab, endpoint, server = served(scenario.build("default", users=8))
    entries = server.connector_space(joins=False)
    assert entries and all(mv == "" for *_rest, mv in entries)
    pages = [s for s in endpoint.scripts if "Get-ADSyncCSObject" in s]
    assert pages and not any("ConnectedMVObjectId" in s for s in pages)


def test_a_metaverse_id_is_not_checked_when_the_joins_are_not_read():
    item = {"DN": "CN=a,DC=contoso,DC=com", "Type": "user", "Connector": True, "MV": "not a guid"}
    assert parse.cs_object(item, "c", "connector space", joins=False) == ("c", "CN=a,DC=contoso,DC=com", "user", True, "")


def test_the_joins_keep_only_persons():
    lab = scenario.build("resource-forest")
    entries = list(LabTarget(lab).server.connector_space(joins=True))
    _counts, joins = survey(entries, counts=False, joins=True)
    kinds = {kind for _c, _n, kind, is_connector, mv in entries if is_connector and mv}
    assert {"group", "computer"} <= kinds
    kept = {kind for members in joins.members.values() for _c, kind, _dn in members}
    assert kept == {"user", "inetOrgPerson"}
    assert joins.of(f"CN=user04,{scenario.HYBRID_OU}") is not None


def _pages(endpoint):
    return [s for s in endpoint.scripts if "Get-ADSyncCSObject" in s]


def test_planning_licences_with_one_ad_connector_asks_no_metaverse_ids(served):
    """Where the decision is made (observe): one forest, licences and a scope change planned,
    the pages sent over PSRP carry no ConnectedMVObjectId (final read D4: the existing tests
    passed joins=False themselves)."""
    from reconciler.loader import load_desired
    from reconciler.observe import observe
    from reconciler.provider import Target
    from providers.lab.provider import LabTenant

    lab, endpoint, server = served(scenario.build("default", users=8))
    desired = load_desired(ROOT / "desired-state" / "rebuild.toml")
    assert desired.licenses and desired.scope is not None
    observe(Target(server, LabTenant(lab)), desired)
    assert _pages(endpoint) and not any("ConnectedMVObjectId" in s for s in _pages(endpoint))


def test_planning_licences_with_two_ad_connectors_asks_the_metaverse_ids(served):
    from reconciler.loader import load_desired
    from reconciler.observe import observe
    from reconciler.provider import Target
    from providers.lab.provider import LabTenant

    lab, endpoint, server = served(scenario.build("two-forest", users=8))
    desired = load_desired(ROOT / "desired-state" / "two-forests.toml")
    assert desired.licenses
    observed = observe(Target(server, LabTenant(lab)), desired)
    assert any("ConnectedMVObjectId" in s for s in _pages(endpoint))
    assert observed.server.joins is not None
