"""A purged and re-created user of an account/resource topology (review 4, F1): re-creation
stops only its own connector's flows; a linked mailbox of the other forest joins the new
person again and brings msExchMailboxGuid back through that forest's rules. Such a user is
neither purged (it gains nothing, irreversibly) nor licensed (no mailbox can come)."""

from conftest import EXAMPLE
from providers.lab import scenario
from providers.lab.provider import LabTarget
from reconciler.apply import apply_plan, observe
from reconciler.loader import loads_desired
from reconciler.model import SyncPolicy
from reconciler.outcome import ACTS, conditions, predict
from reconciler.plan import build_plan
from reconciler.operations import PurgeDeletedUsers

LINKED = tuple(f"{sam}@contoso.com" for sam in scenario.LINKED_USERS)

PURGE = """
[scope]
included = ["OU=Corp,DC=contoso,DC=com"]
excluded = []
[purge]
ous = ["OU=HybridUsers,OU=Corp,DC=contoso,DC=com"]
max_count = 25
"""


def _contoso_only(extra=""):
    text = EXAMPLE.read_text().replace('kind = "replacement"\n', 'kind = "replacement"\nconnector = "contoso.com"\n')
    return loads_desired(text + extra, "contoso-only.toml")


def _in_the_bin():
    """The README's half-done path: HybridUsers taken out of contoso's scope by hand and synced."""
    lab = scenario.build("resource-forest")
    lab.set_deletion_threshold(1000)
    ad = lab.ad_connector()
    lab.set_container_scope(ad.included_containers, (*ad.excluded_containers, scenario.HYBRID_OU), connector=ad.identifier)
    lab.run_cycle(SyncPolicy.INITIAL)
    return lab


def _purged(plan):
    return {r.upn.lower() for s in plan.steps if isinstance(s.operation, PurgeDeletedUsers) for r in s.operation.users}


def test_a_user_whose_linked_mailbox_brings_the_guid_back_is_not_purged_for_nothing_and_not_licensed():
    """Fails before the fix: user04-06 were purged (irreversible), re-created, joined again to their
    fabrikam mailbox objects, got msExchMailboxGuid back from fabrikam's stock rule, and were
    licensed with no mailbox coming."""
    lab = _in_the_bin()
    desired = _contoso_only(PURGE)
    target = LabTarget(lab)
    plan = build_plan(desired, observe(target, desired), "lab")
    assert not _purged(plan) & set(LINKED), sorted(_purged(plan))
    kept = [n for n in plan.notices if n.code == "purge-kept" and "from another forest" in n.message]
    assert kept and set(LINKED) <= {u.lower() for n in kept for u in n.message.rsplit(": ", 1)[1].split(", ")}
    assert "fabrikam.com's rules" in kept[0].message
    apply_plan(plan, desired, target, approvals=frozenset(plan.approvals_needed), force=True)
    for upn in LINKED:
        cloud = lab.cloud_user(upn)
        assert cloud is not None and cloud.licenses == (), f"{upn}: a licence was spent, and no mailbox came"


def test_a_user_purged_by_an_earlier_apply_still_asks_the_joined_connectors():
    """Fails before the fix: a user in ``guid_gone`` (or ``recreated``: apply's decision after
    the sync) was taken as "no GUID" without asking the joins, and licensed."""
    lab = scenario.build("resource-forest")
    desired = _contoso_only()
    target = LabTarget(lab)
    plan = build_plan(desired, observe(target, desired), "lab")
    apply_plan(plan, desired, target, approvals=frozenset(plan.approvals_needed), force=True)
    observed = observe(target, desired)
    server = observed.server
    excluded = tuple(a for c in server.connectors_of_kind("AAD") for a in c.excluded_attributes)
    for how in ("guid_gone", "recreated"):
        cond = conditions(server, server.rules, excluded, sync_planned=False, cleared_since=None, **{how: frozenset(u.lower() for u in (*LINKED, "user08@contoso.com"))})
        outcomes = {o.upn: o for o in predict(desired, observed.tenant, cond)[0]}
        for upn in LINKED:
            assert outcomes[upn].verdict not in ACTS and outcomes[upn].code == "guid-stays-joined", (how, outcomes[upn])
            assert outcomes[upn].reason.startswith("re-created, but the metaverse person is joined with a user object of fabrikam.com")
        assert outcomes["user08@contoso.com"].code != "guid-stays-joined"
