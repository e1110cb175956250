"""A scope change that takes a resource forest's linked mailboxes out (review 4, F9): each is
joined into the person of an account of another forest that stays in scope, so no cloud user is
deleted; the person loses what the mailbox object brought. Not counted as deletions (nor against
the export deletion threshold), named with the object it is joined with."""

from providers.lab import scenario
from providers.lab.provider import LabTarget
from reconciler.apply import apply_plan, observe
from reconciler.loader import loads_desired
from reconciler.plan import build_plan

RESOURCES = "OU=Resources,OU=Fabrikam,DC=fabrikam,DC=com"
DESIRED = f"""[target]
kind = "lab"
[scheduler]
sync_cycle_enabled = true
[scope]
included = ["OU=Corp,DC=contoso,DC=com", "OU=Fabrikam,DC=fabrikam,DC=com"]
excluded = ["{RESOURCES}"]
"""


def test_linked_mailboxes_leaving_the_scope_are_not_counted_as_cloud_deletions():
    """Fails before the fix: the 3 linked mailboxes were counted as 3 users the sync deletes in
    the cloud, and with a deletion threshold of 2 the plan was refused ("3 deletions ... exceed")."""
    lab = scenario.build("resource-forest")
    lab.set_deletion_threshold(2)
    desired = loads_desired(DESIRED, "scope.toml")
    target = LabTarget(lab)
    plan = build_plan(desired, observe(target, desired), "lab")
    assert not [n for n in plan.notices if n.code in ("scope-objects", "scope-deletes")], [n.message for n in plan.notices if n.code.startswith("scope")]
    (notice,) = [n for n in plan.notices if n.code == "scope-joined-leave"]
    for sam in scenario.LINKED_USERS:
        assert f"CN={sam},{RESOURCES} (fabrikam.com), joined with CN={sam},{scenario.HYBRID_OU} (contoso.com)" in notice.message
    assert notice.message.startswith("3 object(s) leave the sync scope but delete nothing in the cloud")
    report = apply_plan(plan, desired, target, approvals=frozenset(plan.approvals_needed), force=True)
    assert all(r.status.value == "done" for r in report.results), report.results
    for sam in scenario.LINKED_USERS:
        cloud = lab.cloud_user(f"{sam}@contoso.com")
        assert cloud is not None and cloud.deleted_at is None  # the person stays


def test_an_object_whose_joined_partner_leaves_too_is_still_a_deletion():
    lab = scenario.build("resource-forest")
    lab.set_deletion_threshold(1000)
    text = DESIRED.replace('included = ["OU=Corp,DC=contoso,DC=com", ', 'included = ["OU=ServiceAccounts,OU=Corp,DC=contoso,DC=com", ')
    desired = loads_desired(text, "scope.toml")
    plan = build_plan(desired, observe(LabTarget(lab), desired), "lab")
    assert not [n for n in plan.notices if n.code == "scope-joined-leave"]
    (counted,) = [n for n in plan.notices if n.code == "scope-objects"]
    assert "the sync deletes each of them in the cloud" in counted.message
