"""Drift's "GUID in the cloud" is per forest (review 4, F8): a flow of fabrikam.com's rules
reaches fabrikam's users and the persons joined with a fabrikam object, not every contoso user."""

from test_resource_forest import LINKED, _for

from providers.lab import scenario
from providers.lab.provider import LabTarget
from reconciler import drift
from reconciler.apply import apply_plan, observe
from reconciler.plan import build_plan


def _drift_after_contoso_only(name):
    desired = _for("contoso.com")
    lab = scenario.build(name)
    target = LabTarget(lab)
    plan = build_plan(desired, observe(target, desired), "lab")
    apply_plan(plan, desired, target, approvals=frozenset(plan.approvals_needed), force=True)
    report = drift.detect(desired, drift.observe_read_only(target.server, target.tenant, desired), "lab")
    return [i for i in report.items if i.what == "GUID in the cloud" and "fabrikam.com" in i.resource]


def test_a_flow_of_the_other_forest_is_not_said_to_bring_the_guid_to_this_forests_users():
    """Fails before the fix: "msExchMailboxGuid is in the cloud for 20 user(s): user01@contoso.com ..."."""
    assert _drift_after_contoso_only("two-forest") == []


def test_it_is_said_for_the_persons_joined_with_that_forests_objects():
    (item,) = [i for i in _drift_after_contoso_only("resource-forest") if i.resource.endswith("/user")]
    assert item.detail.startswith(f"msExchMailboxGuid is in the cloud for {len(LINKED)} user(s)")
    assert all(upn in item.detail for upn in LINKED) and "user01@contoso.com" not in item.detail
