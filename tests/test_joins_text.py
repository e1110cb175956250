"""What the plan says about joined persons (review 4, F6): the joined object of the other
forest by its DN, the way out, a reason that reads for one user or many, and why the joins are
unknown (the provider's error; an entry without a metaverse id is not 'not found')."""

from test_resource_forest import LINKED, _for, _outcomes

from conftest import plan_for
from providers.lab import scenario
from providers.lab.provider import LabTarget

RESOURCES = "OU=Resources,OU=Fabrikam,DC=fabrikam,DC=com"


def test_the_joined_object_is_named_by_its_dn_and_the_way_out_is_offered():
    plan = plan_for(_for("contoso.com"), LabTarget(scenario.build("resource-forest")))
    (named,) = [n for n in plan.notices if n.code == "guid-joined-objects"]
    for upn in LINKED:
        sam = upn.split("@")[0]
        assert f"{upn} -> CN={sam},{RESOURCES} (fabrikam.com)" in named.message
    (held,) = [n for n in plan.notices if n.code == "guid-stays-joined"]
    assert held.message.startswith("3 user(s) not licensed, no unit taken: the metaverse person is joined with a user object of fabrikam.com")
    assert 'connector = "all-ad"' in held.message and "its metaverse object" not in held.message and "on it" not in held.message


def test_a_connector_without_a_metaverse_id_is_not_reported_as_not_found():
    lab = scenario.build("resource-forest")
    target = LabTarget(lab)
    real = target.server.connector_space
    target.server.connector_space = lambda joins=False: ((c, d, t, k, "" if d.startswith("CN=user04,OU=HybridUsers") else mv) for c, d, t, k, mv in real(joins))
    outcome = _outcomes(plan_for(_for("contoso.com"), target))["user04@contoso.com"]
    assert outcome.code == "guid-may-stay"
    assert "carries no metaverse id" in outcome.reason and "not found" not in outcome.reason


class _Failing(LabTarget):
    def __init__(self, lab):
        super().__init__(lab)
        self.server.connector_space = lambda joins=False: None
        self.server.connector_space_error = "entra-connect: connector space: Get-ADSyncCSObject failed (password=Hunter2-Secret-Value)"


def test_the_reason_a_connector_space_read_failed_is_kept_without_secrets():
    outcome = _outcomes(plan_for(_for("contoso.com"), _Failing(scenario.build("resource-forest"))))["user04@contoso.com"]
    assert "the connector space could not be read: entra-connect: connector space: Get-ADSyncCSObject failed" in outcome.reason
    assert "Hunter2-Secret-Value" not in outcome.reason
