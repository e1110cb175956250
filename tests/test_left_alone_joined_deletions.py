"""A linked mailbox (resource forest) and its account (account forest) leaving the sync scope
together are one cloud user, one metaverse person: the export deletes it once and counts it once
against its deletion threshold. The plan counted two deletions (one per connector object), so a
scope change the export takes was refused. Only joins seen in the connector space merge: an
object listed without a metaverse id still counts on its own (the cautious, higher number), and
the plan says so."""

import pytest

from providers.lab import scenario
from providers.lab.provider import LabTarget
from reconciler.apply import apply_plan, observe
from reconciler.errors import PlanError
from reconciler.loader import loads_desired
from reconciler.plan import build_plan

RESOURCES = "OU=Resources,OU=Fabrikam,DC=fabrikam,DC=com"
BOTH_OUT = loads_desired(
    f"""[target]
kind = "lab"
[scheduler]
sync_cycle_enabled = true
[scope]
included = ["OU=Corp,DC=contoso,DC=com", "OU=Fabrikam,DC=fabrikam,DC=com"]
excluded = ["{scenario.HYBRID_OU}", "{RESOURCES}"]
""",
    "both-out.toml",
)
# 8 users: 9 synced users leave (user01-08, contractor01), 2 groups, 1 contact and 2 devices: 14
# cloud deletions; the 3 linked mailboxes of user04-06 leave with their accounts.
DELETIONS = 14


def _plan(target):
    return build_plan(BOTH_OUT, observe(target, BOTH_OUT), "lab")


def _scope_objects(plan):
    (notice,) = [n.message for n in plan.notices if n.code == "scope-objects"]
    return notice


def test_a_linked_mailbox_and_its_account_leaving_together_are_one_deletion():
    lab = scenario.build("resource-forest", users=8)
    lab.set_deletion_threshold(DELETIONS)
    target = LabTarget(lab)
    plan = _plan(target)  # refused before: "17 deletions (9 of them synced users) exceed the export deletion threshold of 14"
    notice = _scope_objects(plan)
    assert "3 person(s) leave with objects of several forests at once" in notice and f"so {DELETIONS} deletion(s) count" in notice
    for sam in scenario.LINKED_USERS:
        assert f"CN={sam},{scenario.HYBRID_OU} (contoso.com) with CN={sam},{RESOURCES} (fabrikam.com)" in notice
    # The lab's export counts what the plan counts: it deletes them and does not stop.
    report = apply_plan(plan, BOTH_OUT, target, approvals=frozenset(plan.approvals_needed), force=True)
    assert all(r.status.value == "done" for r in report.results), report.results
    exports = [r for r in lab.server.run_history if r.profile == "Export"]
    assert not [r for r in exports if r.result.startswith("stopped")], exports
    assert exports[-1].detail.endswith(f", {DELETIONS} deleted"), exports[-1]
    for sam in scenario.LINKED_USERS:
        assert lab.cloud_user(f"{sam}@contoso.com") is None or lab.cloud_user(f"{sam}@contoso.com").deleted_at is not None


def _without_metaverse_ids(lab, where):
    """The lab's connector space, with the objects under ``where`` listed without a metaverse id."""
    target = LabTarget(lab)
    real = target.server.connector_space
    target.server.connector_space = lambda joins=False: ((c, d, t, k, "" if d.endswith(where) else mv) for c, d, t, k, mv in real(joins))
    return target


def test_where_the_join_is_unknown_each_object_counts_and_the_plan_says_so():
    lab = scenario.build("resource-forest", users=8)
    lab.set_deletion_threshold(DELETIONS)
    with pytest.raises(PlanError, match=f"scope: {DELETIONS + 3} deletions"):
        _plan(_without_metaverse_ids(lab, RESOURCES))
    lab.set_deletion_threshold(500)
    notice = _scope_objects(_plan(_without_metaverse_ids(lab, RESOURCES)))
    assert "3 person object(s) leaving are listed in the connector space without a metaverse id (ConnectedMVObjectId)" in notice
    assert "each counts as a cloud deletion of its own (the cautious, higher number)" in notice
    assert "person(s) leave with objects of several forests at once" not in notice
