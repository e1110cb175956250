"""Distinguished names by RFC 4514: escapes, case and spaces, wherever a DN is compared."""

import pytest
from attrs import evolve

from conftest import ROOT, plan_for
from providers.lab import scenario
from providers.lab.provider import LabTarget
from reconciler import dn
from reconciler.apply import apply_plan
from reconciler.loader import load_desired, loads_desired

REBUILD = ROOT / "desired-state" / "rebuild.toml"
HYBRID = "OU=HybridUsers,OU=Corp,DC=contoso,DC=com"


@pytest.mark.parametrize(
    "a, b",
    [
        (HYBRID, "ou=hybridusers,ou=corp,dc=contoso,dc=com"),
        (HYBRID, "OU=HybridUsers, OU=Corp, DC=contoso, DC=com"),
        (HYBRID, " OU = HybridUsers ,OU=Corp,DC=contoso,DC=com "),
        ("CN=Smith\\, John,DC=x", "CN=Smith\\2C John,DC=x"),
        ("CN=Smith\\, John,DC=x", "cn=SMITH\\, JOHN,dc=X"),
        ("CN=a+SN=b,DC=x", "sn=B + cn=A,dc=X"),
    ],
)
def test_the_same_name_in_other_spellings(a, b):
    assert dn.same(a, b) and dn.same_set([a], [b])


@pytest.mark.parametrize(
    "a, b",
    [
        ("CN=\\ lead,DC=x", "CN=lead,DC=x"),  # an escaped space is part of the value
        ("CN=Smith\\, John,DC=x", "CN=Smith,CN=John,DC=x"),
        ("CN=a\\+SN=b,DC=x", "CN=a+SN=b,DC=x"),
    ],
)
def test_different_names_that_look_alike(a, b):
    assert not dn.same(a, b)


def test_under_is_by_rdn_not_by_text():
    assert dn.below("CN=Smith\\, John," + HYBRID, HYBRID)
    assert not dn.below("CN=Doe\\," + HYBRID, HYBRID), "Doe is in Corp; its name holds ',OU=HybridUsers'"
    assert dn.below("CN=Doe\\," + HYBRID, "OU=Corp,DC=contoso,DC=com")
    assert not dn.below("OU=NotHybridUsers,OU=Corp,DC=contoso,DC=com", HYBRID)
    assert not dn.below(HYBRID, HYBRID) and dn.under(HYBRID, HYBRID)
    assert dn.in_scope("CN=Doe\\," + HYBRID, ["OU=Corp,DC=contoso,DC=com"], [HYBRID])


@pytest.mark.parametrize("bad", ["", "CN", "CN=a\\", "CN=a\\zz", "=a", "CN=a;DC=b", "CN=a,", ",CN=a", 'CN="a",DC=b', "CN=a\\C3,DC=b"])
def test_what_is_not_a_dn(bad):
    assert not dn.is_dn(bad)
    assert not dn.below("CN=x,DC=b", bad)


def test_the_loader_takes_escaped_commas_and_refuses_broken_dns():
    desired = loads_desired('[purge]\nous = ["OU=Sales\\\\, EMEA,DC=contoso,DC=com"]\n', "ok.toml")
    assert desired.purge.ous == ("OU=Sales\\, EMEA,DC=contoso,DC=com",)
    from reconciler.errors import ConfigError

    with pytest.raises(ConfigError, match="purge.ous\\[0\\]"):
        loads_desired('[purge]\nous = ["OU=Sales\\\\"]\n', "bad.toml")


def test_an_escaped_comma_dn_outside_the_ou_is_never_selected():
    lab = scenario.build("escaped-comma-dn")
    target = LabTarget(lab)
    doe = lab.cloud_user("doe01@contoso.com")
    smith_id = lab.cloud_user("smith01@contoso.com").id
    desired = load_desired(REBUILD)
    plan = plan_for(desired, target)
    purged = {u.upn for u in next(s for s in plan.steps if s.id == "purge").operation.users}
    assert "smith01@contoso.com" in purged and "doe01@contoso.com" not in purged
    report = apply_plan(plan, desired, target, approvals=frozenset({"irreversible"}), force=True)
    assert report.ok, report.results
    assert lab.cloud_user("doe01@contoso.com") is doe and doe.deleted_at is None, "Doe was never touched"
    smith = lab.cloud_user("smith01@contoso.com")
    assert smith.id != smith_id and smith.mailbox_guid is None, "Smith, John was rebuilt"
    assert plan_for(desired, target).steps == ()


def test_a_desired_ou_spelled_with_spaces_and_lower_case_selects_the_same_users(target):
    desired = load_desired(REBUILD)
    spaced = evolve(desired, purge=evolve(desired.purge, ous=("ou=hybridusers, ou=corp, dc=contoso, dc=com",)))
    spaced = evolve(spaced, scope=evolve(desired.scope, included=("ou=corp, dc=contoso, dc=com",)))
    a, b = plan_for(desired, target), plan_for(spaced, target)
    users = lambda plan: {u.upn for u in next(s for s in plan.steps if s.id == "purge").operation.users}  # noqa: E731
    assert users(a) == users(b) and len(users(a)) == 21
    assert [s.id for s in a.steps] == [s.id for s in b.steps]
