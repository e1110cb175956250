"""An account/resource-forest topology (the defect left open after issue 16): a user's account in
one forest and its linked mailbox in another are joined into ONE metaverse person, and
msExchMailboxGuid flows from the mailbox object through its own connector's rules. A rule
replaced on the account forest's connector only does not stop it: the plan must not license
such a user (a licence spent where no mailbox can come). The GUID counts as gone only when
every connector joined into the person stops it; where the joins cannot be read, every other
connector that still flows it counts (the cautious answer)."""

import pytest

from conftest import EXAMPLE, plan_for
from providers.lab import scenario
from providers.lab.provider import LabTarget, LabTenant
from reconciler.apply import apply_plan, observe
from reconciler.joins import survey
from reconciler.loader import loads_desired
from reconciler.outcome import ACTS
from reconciler.plan import build_plan
from reconciler.provider import Target

LINKED = tuple(f"{sam}@contoso.com" for sam in scenario.LINKED_USERS)


def _for(connector):
    """Solution 1 (example.toml) with both replacements on ``connector`` only."""
    text = EXAMPLE.read_text().replace('kind = "replacement"\n', f'kind = "replacement"\nconnector = "{connector}"\n')
    return loads_desired(text, f"{connector}.toml")


def _apply(desired, target):
    plan = build_plan(desired, observe(target, desired), target.description)
    report = apply_plan(plan, desired, target, approvals=frozenset(plan.approvals_needed), force=True)
    assert not [r for r in report.results if r.status.value != "done"], report.results
    again = build_plan(desired, observe(target, desired), target.description)
    assert not again.steps, [s.id for s in again.steps]
    return plan


def _outcomes(plan):
    return {o.upn: o for o in plan.outcomes}


def test_a_replacement_on_the_account_forests_connector_only_does_not_license_users_whose_mailbox_is_in_the_resource_forest():
    """Fails before the fix: the plan predicted "GUID gone" from contoso's rules alone and licensed
    user04-06; after apply they held a licence, their GUID was still in the cloud (flowing from
    fabrikam's stock rule into the joined person) and no mailbox came."""
    lab = scenario.build("resource-forest")
    plan = _apply(_for("contoso.com"), LabTarget(lab))
    outcomes = _outcomes(plan)
    for upn in LINKED:
        cloud = lab.cloud_user(upn)
        assert cloud.mailbox_guid, "the lab still flows the GUID from fabrikam's stock rule into the joined person"
        assert cloud.licenses == (), f"{upn}: a licence was spent, and no mailbox came ({lab.mailbox_state(cloud)})"
        assert outcomes[upn].verdict not in ACTS, (upn, outcomes[upn])
        assert outcomes[upn].code == "guid-stays-joined"
        assert "joined with a user object of fabrikam.com" in outcomes[upn].reason
    (notice,) = [n for n in plan.notices if n.code == "guid-stays-joined"]
    assert set(notice.users) == set(LINKED)
    # The account forest's own users (no mailbox object elsewhere) are licensed as before.
    assert outcomes["user08@contoso.com"].verdict in ACTS
    assert lab.mailbox_state(lab.cloud_user("user08@contoso.com")) == "present"


def test_the_replacement_on_every_connector_licenses_the_joined_users_and_their_mailboxes_come():
    lab = scenario.build("resource-forest")
    plan = _apply(_for("all-ad"), LabTarget(lab))
    outcomes = _outcomes(plan)
    for upn in LINKED:
        assert outcomes[upn].verdict in ACTS, (upn, outcomes[upn])
        cloud = lab.cloud_user(upn)
        assert cloud.mailbox_guid is None and lab.mailbox_state(cloud) == "present"
        # usageLocation still comes from the mailbox object through fabrikam's copy.
        assert cloud.usage_location == "US"


def test_the_joins_are_read_from_the_connector_space_and_show_the_account_resource_pairs():
    lab = scenario.build("resource-forest")
    _counts, joins = survey(LabTarget(lab).server.connector_space(joins=True), counts=False, joins=True)
    assert joins.across_forests() == len(LINKED)
    members = joins.of(f"CN=user04,{scenario.HYBRID_OU}")
    assert sorted(members) == sorted([(scenario.AD_CONNECTOR, "user"), (scenario.FABRIKAM_CONNECTOR, "user")])
    assert joins.of(f"CN=user08,{scenario.HYBRID_OU}") == ((scenario.AD_CONNECTOR, "user"),)
    assert joins.of("CN=nobody,OU=Corp,DC=contoso,DC=com") is None


def test_two_disjoint_forests_plan_as_before_when_the_joins_show_no_join_across_them():
    lab = scenario.build("two-forest")
    desired = _for("contoso.com")
    observed = observe(LabTarget(lab), desired)
    assert observed.server.joins is not None and observed.server.joins.across_forests() == 0
    outcomes = _outcomes(build_plan(desired, observed, "lab"))
    # fabrikam's stock rule still flows the GUID, but no contoso user is joined to a fabrikam object.
    assert all(outcomes[f"user{i:02d}@contoso.com"].verdict in ACTS for i in (4, 5, 6, 8))


class _Unreadable(LabTarget):
    """A lab whose connector space cannot be read (a failed Get-ADSyncCSObject)."""

    def __init__(self, lab):
        super().__init__(lab)
        self.server.connector_space = lambda joins=False: None


@pytest.mark.parametrize("name", ["two-forest", "resource-forest"])
def test_unknown_joins_give_the_cautious_answer_named_in_the_plan(name):
    lab = scenario.build(name)
    plan = plan_for(_for("contoso.com"), _Unreadable(lab))
    outcomes = _outcomes(plan)
    for upn in ("user04@contoso.com", "user08@contoso.com"):
        assert outcomes[upn].verdict not in ACTS and outcomes[upn].code == "guid-may-stay", outcomes[upn]
        assert "the connector space could not be read" in outcomes[upn].reason
        assert "fabrikam.com's rules still bring msExchMailboxGuid" in outcomes[upn].reason
    (notice,) = [n for n in plan.notices if n.code == "guid-may-stay" and "user08@contoso.com" in n.users]
    assert "user04@contoso.com" in notice.users and "no licence is spent" in notice.message


def test_unknown_joins_do_not_hold_back_a_replacement_on_every_connector():
    lab = scenario.build("resource-forest")
    plan = plan_for(_for("all-ad"), _Unreadable(lab))
    outcomes = _outcomes(plan)
    assert all(outcomes[upn].verdict in ACTS for upn in (*LINKED, "user08@contoso.com"))


def test_a_user_not_found_in_the_connector_space_gets_the_cautious_answer():
    lab = scenario.build("two-forest")
    target = LabTarget(lab)
    real = target.server.connector_space
    target.server.connector_space = lambda joins=False: (e for e in real(joins) if not e[1].startswith("CN=user04,"))
    outcomes = _outcomes(plan_for(_for("contoso.com"), target))
    assert outcomes["user04@contoso.com"].code == "guid-may-stay"
    assert "its AD object was not found in the connector space" in outcomes["user04@contoso.com"].reason
    assert outcomes["user05@contoso.com"].verdict in ACTS


def test_the_joins_are_read_over_psrp_from_get_adsynccsobject(served):
    """The real provider reads ConnectedMVObjectId with each connector-space page; the same
    persons are joined as in the lab, and the plan is the in-process lab's."""
    lab, endpoint, server = served(scenario.build("resource-forest", users=8))
    remote = server.connector_space(joins=True)
    local = list(LabTarget(lab).server.connector_space(joins=True))

    def persons(entries):
        by_mv = {}
        for connector, name, _kind, is_connector, mv in entries:
            if is_connector:
                by_mv.setdefault(mv, set()).add((connector.lower(), name.lower()))
        return sorted(sorted(p) for p in by_mv.values())

    assert persons(remote) == persons(local)
    assert any("MV = [string]$object.ConnectedMVObjectId" in s for s in endpoint.scripts)
    desired = _for("contoso.com")
    over_psrp = build_plan(desired, observe(Target(server, LabTenant(lab)), desired), "lab")
    in_process = build_plan(desired, observe(LabTarget(lab), desired), "lab")
    assert over_psrp.outcomes == in_process.outcomes
    assert _outcomes(over_psrp)["user04@contoso.com"].code == "guid-stays-joined"


def test_the_resource_forest_lab_is_saved_and_read_back_and_an_older_file_still_loads():
    from providers.lab import store

    lab = scenario.build("resource-forest", users=8)
    text = store.dumps(lab)
    assert store.loads(text) == lab
    plain = scenario.build("two-forest", users=8)
    older = store.dumps(plain).replace(',"master_account_sid":null,"mailbox_guid":null,"mail_nickname":null,"usage_location":null', "")
    assert '"master_account_sid"' not in older
    assert store.loads(older).ad_objects == plain.ad_objects


def test_the_plan_says_what_the_prediction_was_read_from_and_its_lab_assumption():
    plan = plan_for(_for("contoso.com"), LabTarget(scenario.build("resource-forest", users=8)))
    (notice,) = [n for n in plan.notices if n.code == "metaverse-joins"]
    assert "3 person(s) joined from several forests" in notice.message and "Lab assumption" in notice.message
    single = plan_for(EXAMPLE, LabTarget(scenario.build("default", users=8)))
    assert not [n for n in single.notices if n.code == "metaverse-joins"]


def test_drift_reads_the_joins_too_and_names_the_licences_owed_on_the_forest_whose_rule_was_replaced():
    """Without the joins, drift's plan gave every contoso user the cautious answer and named no
    licence missing, where plan licenses them."""
    from reconciler import drift

    lab = scenario.build("two-forest")
    target = LabTarget(lab)
    desired = _for("contoso.com")
    report = drift.detect(desired, drift.observe_read_only(target.server, target.tenant, desired), "lab")
    missing = [i for i in report.items if i.what == "licence missing"]
    assert missing and "user04@contoso.com" in missing[0].detail


def test_a_mailbox_leaving_the_scope_takes_what_it_brought_from_its_accounts_person_in_a_delta():
    from reconciler.model import SyncPolicy

    lab = scenario.build("resource-forest", users=8)
    lab.server.sync_cycle_enabled = False
    fabrikam = lab.connector(scenario.FABRIKAM_CONNECTOR)
    upn = "user04@contoso.com"
    assert lab.cloud_user(upn).mailbox_guid
    lab.set_container_scope(fabrikam.included_containers, (scenario.RESOURCE_OU,), fabrikam.identifier)
    lab.run_cycle(SyncPolicy.DELTA)
    assert lab.cloud_user(upn).mailbox_guid is None and lab.cloud_user(upn).usage_location is None
    lab.set_container_scope(fabrikam.included_containers, (), fabrikam.identifier)
    lab.run_cycle(SyncPolicy.DELTA)
    assert lab.cloud_user(upn).mailbox_guid and lab.cloud_user(upn).usage_location == "US"


def test_a_connector_space_read_that_ends_early_is_unknown_not_no_join(served, monkeypatch):
    """Fails before the fix (review 4, F5): a server that returns fewer objects than asked
    (MaxResultCount capped) ended the read after its first page with no error; the linked
    mailboxes of fabrikam.com (a member of the person, not the user's own object) were not seen,
    read as "no join", and user04-06 were licensed.
    The read is now compared with Get-ADSyncConnectorStatistics' TotalConnectors."""
    from providers.entraconnect import scripts

    lab, endpoint, server = served(scenario.build("resource-forest", users=8))
    whole = scripts.connector_space_page
    monkeypatch.setattr(scripts, "connector_space_page", lambda identifier, start, count=None, joins=False: whole(identifier, start, min(count or scripts.CS_PAGE, 8), joins))
    outcomes = _outcomes(build_plan(_for("contoso.com"), observe(Target(server, LabTenant(lab)), _for("contoso.com")), "lab"))
    for upn in LINKED:
        assert outcomes[upn].verdict not in ACTS and outcomes[upn].code == "guid-may-stay", outcomes[upn]
    # The provider's reason is kept in the plan (review 4, F6), so the operator can fix the read.
    assert "but Get-ADSyncConnectorStatistics counts" in outcomes["user04@contoso.com"].reason
    assert server.connector_space(joins=True) is None
    assert any("Get-ADSyncConnectorStatistics -ConnectorName 'contoso.com'" in s for s in endpoint.scripts)


def test_a_complete_connector_space_read_matches_the_connector_statistics(served):
    lab, endpoint, server = served(scenario.build("resource-forest", users=8))
    entries = server.connector_space(joins=True)
    assert entries is not None
    for connector in lab.ad_connectors():
        stats = [s for s in endpoint.scripts if f"Get-ADSyncConnectorStatistics -ConnectorName '{connector.name}'" in s]
        assert stats, connector.name
    assert sum(1 for e in entries if e[3]) == sum(1 for c in lab.ad_connectors() for g, _d, _k in lab.connector_space(c.identifier) if lab.metaverse_anchors().get(g, g))


@pytest.mark.parametrize("users", [20, 100])
def test_the_resource_forest_has_three_linked_mailboxes_at_any_size(users):
    """The 4th to 6th contoso users are linked by position: from 100 users on their sams are
    "user004".., and picking them by name (user04..) made a lab with no resource forest."""
    lab = scenario.build("resource-forest", users=users)
    width = max(2, len(str(users)))
    wanted = [f"user{i:0{width}d}" for i in (4, 5, 6)]
    assert [account.sam for _mailbox, account in lab.linked_mailboxes()] == wanted
    assert all(mailbox.mailbox_guid for mailbox, _account in lab.linked_mailboxes())


def test_the_resource_forest_needs_six_users():
    with pytest.raises(ValueError, match="resource-forest scenario needs at least 6 users"):
        scenario.build("resource-forest", users=5)
