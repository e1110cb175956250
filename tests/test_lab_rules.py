"""The lab follows the real system's rules, one test per rule (domain-facts A and B)."""

import pytest
from attrs import evolve

from providers.lab import scenario, store
from providers.lab.scenario import ENTERPRISEPACK_ID, HYBRID_OU
from providers.lab.world import lab_guid
from reconciler.errors import LabError, ProviderError, RefusedError
from reconciler.model import GUID_ATTRIBUTE, AttributeFlow, Direction, FlowType, SyncPolicy, SyncRule


def rule(lab, name):
    return next(r for r in lab.server.rules if r.name == name)


def cloud(lab, upn):
    return lab.cloud_user(upn)


def custom_rule(lab, precedence, flow, name="Custom GUID", object_type="user"):
    return SyncRule(
        identifier=lab_guid("test-rule", name),
        name=name,
        direction=Direction.INBOUND,
        precedence=precedence,
        connector=lab.ad_connector().identifier,
        source_object_type=object_type,
        target_object_type="person",
        flows=(flow,),
    )


def guid_flow(expression=None, flow_type=FlowType.EXPRESSION, source=None, execute_once=False):
    return AttributeFlow(GUID_ATTRIBUTE, flow_type, source=source, expression=expression, execute_once=execute_once)


# ---------------------------------------------------------------- the starting point


def test_default_scenario_is_the_articles_starting_point(lab):
    user = cloud(lab, "user05@contoso.com")
    assert user.synced and user.mailbox_guid, "the GUID reached the cloud with the stock rules"
    assert [cloud(lab, f"user0{i}@contoso.com").license(ENTERPRISEPACK_ID) is not None for i in (1, 2, 3)] == [True] * 3
    assert lab.mailbox_state(cloud(lab, "user01@contoso.com")) == "absent", "licensed but no mailbox: the GUID blocked it"
    assert cloud(lab, "user07@contoso.com").usage_location is None
    assert cloud(lab, "contractor01@contoso.com").mailbox_guid
    taken = {r.precedence for r in lab.server.rules}
    assert {108, 109, 200} <= taken


def test_both_stock_exchange_rules_flow_the_guid_and_usage_location(lab):
    for name, object_type in (("In from AD - User Exchange", "user"), ("In from AD - InetOrgPerson Exchange", "inetOrgPerson")):
        stock = rule(lab, name)
        assert stock.source_object_type == object_type
        destinations = {f.destination: f for f in stock.flows}
        assert destinations[GUID_ATTRIBUTE].flow_type is FlowType.DIRECT
        assert destinations["usageLocation"].source == "msExchUsageLocation"


# ---------------------------------------------------------------- rules and precedence


def test_precedence_is_unique_across_all_rules_whatever_the_direction(lab):
    # 200 is an outbound rule's; an inbound custom rule may not take it either.
    with pytest.raises(RefusedError, match="Precedence is not unique"):
        lab.put_rule(custom_rule(lab, 200, guid_flow("NULL")))
    lab.put_rule(custom_rule(lab, 90, guid_flow("NULL")))
    assert rule(lab, "Custom GUID").precedence == 90


def test_stock_rules_can_only_be_enabled_or_disabled(lab):
    stock = rule(lab, "In from AD - User Exchange")
    with pytest.raises(RefusedError, match="can only be enabled or disabled"):
        lab.put_rule(evolve(stock, flows=(guid_flow("NULL"),)))
    with pytest.raises(RefusedError, match="can only be enabled or disabled"):
        lab.put_rule(evolve(stock, precedence=99))
    lab.set_rule_disabled(stock.identifier, True)
    assert rule(lab, "In from AD - User Exchange").disabled


def test_an_upgrade_brings_back_deleted_stock_rules_and_keeps_disabled_ones_disabled(lab):
    lab.remove_rule(rule(lab, "In from AD - User Exchange").identifier)
    lab.set_rule_disabled(rule(lab, "In from AD - InetOrgPerson Exchange").identifier, True)
    restored = lab.upgrade()
    assert [r.name for r in restored] == ["In from AD - User Exchange"]
    assert rule(lab, "In from AD - User Exchange").precedence == 108
    assert rule(lab, "In from AD - InetOrgPerson Exchange").disabled


def test_a_returning_stock_rule_steps_around_a_taken_precedence(lab):
    stock = rule(lab, "In from AD - User Exchange")
    lab.remove_rule(stock.identifier)
    lab.put_rule(custom_rule(lab, 108, guid_flow("NULL", execute_once=True)))
    (returned,) = lab.upgrade()
    assert returned.precedence != 108 and returned.precedence not in {r.precedence for r in lab.server.rules if r is not returned}


# ---------------------------------------------------------------- flows


def test_lower_precedence_number_wins(lab):
    lab.put_rule(custom_rule(lab, 90, guid_flow('"from-custom"', flow_type=FlowType.EXPRESSION)))
    lab.run_cycle(SyncPolicy.INITIAL)
    assert cloud(lab, "user05@contoso.com").mailbox_guid == "from-custom"


def test_null_contributes_nothing_and_lets_lower_rules_contribute(lab):
    lab.put_rule(custom_rule(lab, 90, guid_flow("NULL")))
    before = cloud(lab, "user05@contoso.com").mailbox_guid
    lab.run_cycle(SyncPolicy.INITIAL)
    assert cloud(lab, "user05@contoso.com").mailbox_guid == before, "the stock rule at 108 still contributes"


def test_authoritative_null_removes_the_value_and_blocks_lower_rules(lab):
    lab.put_rule(custom_rule(lab, 90, guid_flow("AuthoritativeNull")))
    lab.run_cycle(SyncPolicy.INITIAL)
    assert cloud(lab, "user05@contoso.com").mailbox_guid is None
    assert cloud(lab, "contractor01@contoso.com").mailbox_guid, "the rule is for user objects only"


def test_no_contributing_rule_removes_the_value(lab):
    stock = rule(lab, "In from AD - User Exchange")
    lab.put_rule(custom_rule(lab, 95, stock.flows[1], name="usage only"))  # keep usage location flowing
    lab.remove_rule(stock.identifier)
    lab.run_cycle(SyncPolicy.INITIAL)
    assert cloud(lab, "user05@contoso.com").mailbox_guid is None
    assert cloud(lab, "user05@contoso.com").usage_location == "US"


def test_apply_once_acts_only_when_the_cloud_object_is_created(lab):
    lab.put_rule(custom_rule(lab, 90, guid_flow('"once"', execute_once=True)))
    new = scenario._ad_user(99, 2, HYBRID_OU)
    lab.ad_users.append(new)
    lab.run_cycle(SyncPolicy.INITIAL)
    assert cloud(lab, "user99@contoso.com").mailbox_guid == "once", "a new object gets the apply-once value"
    assert cloud(lab, "user05@contoso.com").mailbox_guid not in (None, "once"), "existing objects skip the flow"


def test_a_delta_sync_after_a_rule_change_leaves_unchanged_objects_alone(lab):
    lab.put_rule(custom_rule(lab, 90, guid_flow("AuthoritativeNull")))
    assert lab.server.next_policy is SyncPolicy.INITIAL, "a rule change owes a full sync"
    lab.run_cycle(SyncPolicy.DELTA)
    assert cloud(lab, "user05@contoso.com").mailbox_guid, "Delta: unchanged objects keep the old value"
    lab.run_cycle(SyncPolicy.INITIAL)
    assert cloud(lab, "user05@contoso.com").mailbox_guid is None
    assert lab.server.next_policy is SyncPolicy.DELTA


def test_configuration_changes_are_refused_while_a_cycle_runs(lab):
    lab.start_cycle(SyncPolicy.DELTA)
    with pytest.raises(RefusedError, match="sync cycle is in progress"):
        lab.put_rule(custom_rule(lab, 90, guid_flow("NULL")))
    with pytest.raises(RefusedError, match="busy"):
        lab.start_cycle(SyncPolicy.INITIAL)
    lab.advance(60)
    lab.put_rule(custom_rule(lab, 90, guid_flow("NULL")))


def test_staging_mode_exports_nothing(lab):
    lab.server.staging_mode = True
    lab.put_rule(custom_rule(lab, 90, guid_flow("AuthoritativeNull")))
    results = lab.run_cycle(SyncPolicy.INITIAL)
    assert cloud(lab, "user05@contoso.com").mailbox_guid
    assert "staging" in results[-1].detail


def test_the_scheduler_runs_cycles_only_when_enabled(lab):
    runs = len(lab.server.run_history)
    lab.set_scheduler(False)
    lab.advance(120)
    assert len(lab.server.run_history) == runs
    lab.set_scheduler(True)
    lab.advance(45)
    assert len(lab.server.run_history) > runs


# ---------------------------------------------------------------- licences and mailboxes


def test_a_licence_creates_a_mailbox_only_without_the_guid(lab):
    lab.set_scheduler(False)  # no scheduled cycle in the way of the rule change below
    lab.assign_license("user05@contoso.com", ENTERPRISEPACK_ID)
    lab.advance(lab.provisioning_minutes)
    assert lab.mailbox_state(cloud(lab, "user05@contoso.com")) == "absent"
    lab.put_rule(custom_rule(lab, 90, guid_flow("AuthoritativeNull")))
    lab.run_cycle(SyncPolicy.INITIAL)
    lab.assign_license("user06@contoso.com", ENTERPRISEPACK_ID)
    assert lab.mailbox_state(cloud(lab, "user06@contoso.com")) == "pending"
    lab.advance(lab.provisioning_minutes)
    assert lab.mailbox_state(cloud(lab, "user06@contoso.com")) == "present"


def test_clearing_the_guid_under_an_existing_licence_creates_no_mailbox_until_relicensed(lab):
    lab.put_rule(custom_rule(lab, 90, guid_flow("AuthoritativeNull")))
    lab.run_cycle(SyncPolicy.INITIAL)
    user = cloud(lab, "user01@contoso.com")
    assert user.mailbox_guid is None and user.license(ENTERPRISEPACK_ID)
    lab.advance(120)
    assert lab.mailbox_state(user) == "absent"
    lab.remove_license(user.id, ENTERPRISEPACK_ID)
    lab.assign_license(user.id, ENTERPRISEPACK_ID)
    lab.advance(lab.provisioning_minutes)
    assert lab.mailbox_state(user) == "present"


def test_licensing_without_usage_location_fails_with_graphs_message(lab):
    with pytest.raises(ProviderError, match="invalid usage location"):
        lab.assign_license("user07@contoso.com", ENTERPRISEPACK_ID)


def test_licensing_without_free_units_is_a_count_violation(lab):
    free = lab.skus[0].prepaid - lab.consumed_units()[ENTERPRISEPACK_ID]
    users = [f"user{i:02d}@contoso.com" for i in range(4, 21) if i != 7] + ["contractor01@contoso.com"]
    for upn in users[:free]:
        lab.assign_license(upn, ENTERPRISEPACK_ID)
    with pytest.raises(ProviderError, match="does not have any available licenses"):
        lab.assign_license(users[free], ENTERPRISEPACK_ID)


def test_units_freed_by_a_removal_or_a_soft_delete_can_be_assigned_again(lab):
    """The lab counts licences incrementally; the count must follow every way a unit is freed."""
    free = lab.skus[0].prepaid - lab.consumed_units()[ENTERPRISEPACK_ID]
    users = [f"user{i:02d}@contoso.com" for i in range(4, 21) if i != 7] + ["contractor01@contoso.com"]
    for upn in users[:free]:
        lab.assign_license(upn, ENTERPRISEPACK_ID)
    waiting = users[free]
    lab.remove_license(users[0], ENTERPRISEPACK_ID)
    lab.assign_license(waiting, ENTERPRISEPACK_ID)
    with pytest.raises(ProviderError, match="does not have any available licenses"):
        lab.assign_license(users[0], ENTERPRISEPACK_ID)
    # A user in the recycle bin holds no unit, however it got there; restored, it holds one again.
    cloud(lab, users[1]).deleted_at = lab.clock
    lab.assign_license(users[0], ENTERPRISEPACK_ID)
    restored = next(u for u in lab.cloud_users if u.upn == users[1])
    restored.deleted_at = None
    assert lab.consumed_units()[ENTERPRISEPACK_ID] == lab.skus[0].prepaid + 1
    lab.remove_license(waiting, ENTERPRISEPACK_ID)
    with pytest.raises(ProviderError, match="does not have any available licenses"):
        lab.assign_license(waiting, ENTERPRISEPACK_ID)


def test_users_are_found_by_id_or_upn_after_a_rename_or_a_delete(lab):
    user = cloud(lab, "user05@contoso.com")
    assert cloud(lab, user.id) is user and cloud(lab, "USER05@contoso.com") is user
    user.upn = "renamed05@contoso.com"
    assert cloud(lab, "user05@contoso.com") is None
    assert cloud(lab, "renamed05@contoso.com") is user
    user.deleted_at = lab.clock
    assert cloud(lab, user.id) is None and cloud(lab, "renamed05@contoso.com") is None


def test_removing_a_group_licence_is_refused(lab):
    user = cloud(lab, "user01@contoso.com")
    user.licenses[0].by_group = True
    with pytest.raises(ProviderError, match="inherited from a group"):
        lab.remove_license(user.id, ENTERPRISEPACK_ID)


# ---------------------------------------------------------------- scope, deletes, recycle bin


def test_taking_an_ou_out_of_scope_soft_deletes_its_users(lab):
    lab.set_container_scope(["OU=Corp,DC=contoso,DC=com"], [HYBRID_OU])
    lab.run_cycle(SyncPolicy.INITIAL)
    assert cloud(lab, "user05@contoso.com") is None
    assert any(u.upn == "user05@contoso.com" and u.deleted_at is not None for u in lab.cloud_users)
    assert cloud(lab, "svc01@contoso.com") is not None, "the other OU stays"


def test_more_deletes_than_the_threshold_stop_the_whole_export(lab):
    lab.set_deletion_threshold(5)
    lab.set_container_scope(["OU=Corp,DC=contoso,DC=com"], [HYBRID_OU])
    results = lab.run_cycle(SyncPolicy.INITIAL)
    assert results[-1].result == "stopped-deletion-threshold-exceeded"
    assert cloud(lab, "user05@contoso.com") is not None, "nothing was deleted"


def test_bringing_an_ou_back_restores_soft_deleted_users_with_their_guid(lab):
    guid = cloud(lab, "user05@contoso.com").mailbox_guid
    lab.set_container_scope(["OU=Corp,DC=contoso,DC=com"], [HYBRID_OU])
    lab.run_cycle(SyncPolicy.INITIAL)
    lab.set_excluded_attributes([GUID_ATTRIBUTE])
    lab.set_container_scope(["OU=Corp,DC=contoso,DC=com"], [])
    lab.run_cycle(SyncPolicy.INITIAL)
    assert cloud(lab, "user05@contoso.com").mailbox_guid == guid, "restored from the recycle bin, GUID included"


def test_purged_users_come_back_new_and_without_an_excluded_attribute(lab):
    lab.set_container_scope(["OU=Corp,DC=contoso,DC=com"], [HYBRID_OU])
    lab.run_cycle(SyncPolicy.INITIAL)
    old_id = next(u.id for u in lab.cloud_users if u.upn == "user05@contoso.com")
    lab.purge_deleted_user(old_id)
    lab.set_excluded_attributes([GUID_ATTRIBUTE])
    lab.set_container_scope(["OU=Corp,DC=contoso,DC=com"], [])
    lab.run_cycle(SyncPolicy.INITIAL)
    user = cloud(lab, "user05@contoso.com")
    assert user.id != old_id and user.mailbox_guid is None


def test_excluding_an_attribute_alone_leaves_the_cloud_value(lab):
    lab.set_excluded_attributes([GUID_ATTRIBUTE])
    lab.run_cycle(SyncPolicy.INITIAL)
    assert cloud(lab, "user05@contoso.com").mailbox_guid


# ---------------------------------------------------------------- the lab file


def test_the_lab_file_round_trips(lab, tmp_path):
    store.save(lab, tmp_path / "lab.json")
    assert store.load(tmp_path / "lab.json") == lab


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"format": "syncprep-lab", "version": 99, "lab": {}}', "newer than this syncprep reads"),
        ("{not json", "invalid JSON at line 1"),
        ('{"format": "something-else"}', "not a syncprep lab file"),
        ('{"format": "syncprep-lab", "version": 1, "lab": {"clock": "soon"}}', "corrupt lab file"),
    ],
)
def test_a_lab_file_of_another_format_is_refused_in_one_line(tmp_path, content, message):
    path = tmp_path / "lab.json"
    path.write_text(content)
    with pytest.raises(LabError, match=message) as caught:
        store.load(path)
    assert "\n" not in str(caught.value)


def test_a_licence_with_exchange_switched_off_creates_no_mailbox(lab):
    from providers.lab.world import EXCHANGE_PLAN_ID

    lab.set_scheduler(False)
    lab.put_rule(custom_rule(lab, 90, guid_flow("AuthoritativeNull")))
    lab.run_cycle(SyncPolicy.INITIAL)
    lab.assign_license("user05@contoso.com", ENTERPRISEPACK_ID, disabled_plans=(EXCHANGE_PLAN_ID,))
    lab.assign_license("user06@contoso.com", ENTERPRISEPACK_ID, disabled_plans=("57ff2da0-773e-42df-b2af-ffb7a2317929",))
    lab.advance(lab.provisioning_minutes)
    assert lab.mailbox_state(cloud(lab, "user05@contoso.com")) == "absent"
    assert lab.mailbox_state(cloud(lab, "user06@contoso.com")) == "present", "another plan off: Exchange still comes"
