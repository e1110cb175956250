"""Final read A of the core: a purge is planned only where re-creation clears the GUID,
an unjoined object of another forest is no proof of 'no join', an unknown forest is judged
per connector, and an account leaving the scope deletes its cloud user."""

from providers.lab import scenario
from providers.lab.provider import LabTarget
from reconciler.apply import observe
from reconciler.loader import loads_desired
from reconciler.model import SyncPolicy
from reconciler.plan import build_plan

_NO_STOP = """
[target]
kind = "lab"
[scheduler]
sync_cycle_enabled = true
[scope]
included = ["OU=Corp,DC=contoso,DC=com"]
excluded = []
[purge]
ous = ["OU=HybridUsers,OU=Corp,DC=contoso,DC=com"]
max_count = 25
[[licenses]]
sku = "ENTERPRISEPACK"
ous = ["OU=HybridUsers,OU=Corp,DC=contoso,DC=com"]
"""


def _plan(lab, text):
    desired = loads_desired(text, "p.toml")
    return build_plan(desired, observe(LabTarget(lab), desired), "lab")


def test_no_purge_when_the_own_forest_still_sends_the_guid():
    """A2: users in the recycle bin, no rule change and no export exclusion: the stock rule
    flows msExchMailboxGuid into the re-created object, so the purge gains nothing."""
    lab = scenario.build("default")
    lab.set_deletion_threshold(1000)
    ad = lab.ad_connector()
    lab.set_container_scope(ad.included_containers, (*ad.excluded_containers, scenario.HYBRID_OU), connector=ad.identifier)
    lab.run_cycle(SyncPolicy.INITIAL)
    plan = _plan(lab, _NO_STOP)
    assert not [s for s in plan.steps if s.id == "purge"]
    assert not [o for o in plan.outcomes if o.verdict.value in ("assign", "relicense", "reprocess")]
    kept = [n for n in plan.notices if n.code == "purge-kept"]
    assert kept and "user04@contoso.com" in kept[0].message and "from its own forest" in kept[0].message


def test_a_linked_mailbox_listed_without_a_metaverse_id_makes_its_forest_unknown(monkeypatch):
    """A3: fabrikam's linked mailbox of user04 is a connector whose ConnectedMVObjectId did not
    come: it may be user04's partner, and fabrikam's stock rule still brings the GUID, so user04
    is not licensed on the guess that it is single-forest."""
    from conftest import EXAMPLE

    lab = scenario.build("resource-forest")
    target = LabTarget(lab)
    original = type(target.server).connector_space

    def without_id(self, joins=False):
        for connector, name, kind, is_connector, mv in original(self, joins):
            yield connector, name, kind, is_connector, ("" if "user04,ou=resources" in name.lower() else mv)

    monkeypatch.setattr(type(target.server), "connector_space", without_id)
    text = EXAMPLE.read_text().replace('kind = "replacement"\n', 'kind = "replacement"\nconnector = "contoso.com"\n')
    out = {o.upn: o for o in _plan(lab, text).outcomes}
    assert out["user04@contoso.com"].verdict.value == "not licensed", out["user04@contoso.com"]
    assert out["user04@contoso.com"].code == "guid-may-stay" and "without a metaverse id" in out["user04@contoso.com"].reason
    assert out["user05@contoso.com"].code == "guid-stays-joined"


def test_an_unknown_forest_is_judged_per_connector():
    """A4: contoso's AuthoritativeNull at 90 does not stop fabrikam's stock rule for a fabrikam
    object: a user whose forest is not known (no onPremisesDistinguishedName) is not licensed
    while any connector, on its own rules, still brings msExchMailboxGuid."""
    from attrs import evolve

    from conftest import ROOT

    lab = scenario.build("two-forest")
    target = LabTarget(lab)
    text = (ROOT / "desired-state" / "upgrade-safe.toml").read_text().replace('link_type = "Join"\n', 'link_type = "Join"\nconnector = "contoso.com"\n')
    first = observe(target, loads_desired(text, "p.toml"))
    fab = [u.upn for u in first.tenant.users if u.on_prem_dn and "fabrikam" in u.on_prem_dn.lower()][:3]
    con = [u.upn for u in first.tenant.users if u.on_prem_dn and "hybridusers" in u.on_prem_dn.lower()][3:5]
    text = text.split("[[licenses]]")[0] + '[[licenses]]\nsku = "ENTERPRISEPACK"\nusers = [' + ", ".join(f'"{u}"' for u in fab + con) + "]\n"
    desired = loads_desired(text, "p.toml")
    observed = observe(target, desired)
    with_dn = {o.upn: o for o in build_plan(desired, observed, "lab").outcomes}
    assert all(with_dn[u].verdict.value not in ("assign", "relicense", "reprocess") for u in fab)
    observed = evolve(observed, tenant=evolve(observed.tenant, users=tuple(evolve(u, on_prem_dn=None) for u in observed.tenant.users)))
    stripped = {o.upn: o for o in build_plan(desired, observed, "lab").outcomes}
    assert all(stripped[u].verdict.value not in ("assign", "relicense", "reprocess") for u in fab + con), [(u, stripped[u].verdict) for u in fab + con]
    assert all(stripped[u].code == "guid-may-stay" and "fabrikam.com's rules" in stripped[u].reason for u in fab + con)


def test_an_account_leaving_the_scope_is_a_deletion_though_its_linked_mailbox_stays():
    """A1: rebuild.toml on the resource forest takes HybridUsers out: user04-06's accounts leave
    while their fabrikam linked mailboxes stay. The cloud users are deleted (the account brings
    sourceAnchor and UPN), so the plan counts them against the deletion threshold of 24 (26
    deletions) instead of saying 'threshold-ok' and 'deletes nothing in the cloud'."""
    from conftest import ROOT

    from reconciler.errors import PlanError

    lab = scenario.build("resource-forest")
    lab.set_deletion_threshold(24)
    text = (ROOT / "desired-state" / "rebuild.toml").read_text()
    try:
        plan = _plan(lab, text)
    except PlanError:
        return
    codes = {n.code: n.message for n in plan.notices}
    assert "threshold-ok" not in codes, codes.get("threshold-ok")
    assert "rebuild.threshold.raise" in {s.id for s in plan.steps}
    joined = codes.get("scope-joined-leave", "")
    assert "HybridUsers" not in joined, joined


def test_a_scope_change_that_brings_linked_mailboxes_in_says_the_guid_may_come_back():
    """A5: fabrikam's Resources OU is out of scope (user04's cloud GUID is gone); a plan whose
    [scope] brings it back lets user04's linked mailbox join again and bring msExchMailboxGuid:
    the plan says so and licenses no one on today's joins."""
    from conftest import EXAMPLE

    lab = scenario.build("resource-forest")
    fab = next(c for c in lab.ad_connectors() if c.name == "fabrikam.com")
    lab.set_container_scope(fab.included_containers, (*fab.excluded_containers, scenario.RESOURCE_OU), connector=fab.identifier)
    lab.run_cycle(SyncPolicy.INITIAL)
    text = EXAMPLE.read_text().replace('kind = "replacement"\n', 'kind = "replacement"\nconnector = "contoso.com"\n')
    head, tail = text.split("[[licenses]]", 1)
    text = head + '[scope]\nincluded = ["OU=Corp,DC=contoso,DC=com", "OU=Fabrikam,DC=fabrikam,DC=com"]\nexcluded = []\n[[licenses]]' + tail
    plan = _plan(lab, text)
    user04 = {o.upn: o for o in plan.outcomes}["user04@contoso.com"]
    assert user04.code == "guid-may-stay" and "into the sync scope" in user04.reason, user04
    assert any(n.code == "scope-enters" and "fabrikam.com" in n.message for n in plan.notices)
