"""With one AD connector the joins cost nothing (review 4, F3): the connector-space pages read
over PSRP carry no ConnectedMVObjectId (about 46% more JSON at 100,000 objects, and one odd
value refused the whole read), and the joins keep only persons (user, inetOrgPerson)."""

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
