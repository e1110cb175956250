"""The AD objects a lab file may hold are those a real directory and sync engine would (final
read C, C2): a ``user`` in ``ad_objects`` is a resource-forest mailbox (msExchMasterAccountSid),
a group, contact or computer carries none of a mailbox's fields, and a mailbox is joined only to
an account of another forest."""

import pytest

from providers.lab import scenario, store
from providers.lab.world import AdObject
from reconciler.errors import LabError


@pytest.fixture
def lab():
    return scenario.build("default", users=20)


def _refused(lab, tmp_path, obj):
    lab.ad_objects.append(obj)
    path = tmp_path / "lab.json"
    path.write_text(store.dumps(lab))
    index = len(lab.ad_objects) - 1
    with pytest.raises(LabError) as caught:
        store.load(path)
    message = str(caught.value)
    assert f"$.lab.ad_objects[{index}]" in message and "\n" not in message
    return message


def test_a_user_in_ad_objects_without_a_master_account_is_refused(lab, tmp_path):
    ghost = AdObject("0f5c2b4e-1111-4111-8111-000000000001", "ghost", f"CN=ghost,{scenario.HYBRID_OU}", "user")
    assert "needs master_account_sid" in _refused(lab, tmp_path, ghost)


@pytest.mark.parametrize("kind", ["group", "contact", "computer"])
def test_a_group_contact_or_computer_with_a_master_account_is_refused(lab, tmp_path, kind):
    sid = lab.ad_users[0].object_sid
    other = AdObject("0f5c2b4e-1111-4111-8111-000000000002", "odd", f"CN=odd,{scenario.HYBRID_OU}", kind, master_account_sid=sid)
    assert "master_account_sid" in _refused(lab, tmp_path, other)


def test_a_group_with_a_mailbox_guid_is_refused(lab, tmp_path):
    other = AdObject("0f5c2b4e-1111-4111-8111-000000000003", "odd", f"CN=odd,{scenario.HYBRID_OU}", "group", mailbox_guid="0f5c2b4e-1111-4111-8111-000000000004")
    assert "mailbox_guid" in _refused(lab, tmp_path, other)


def test_a_mailbox_whose_master_account_is_in_its_own_forest_is_not_joined(lab):
    account = lab.ad_users[0]
    mailbox = AdObject("0f5c2b4e-1111-4111-8111-000000000005", "own", f"CN=own,{scenario.HYBRID_OU}", "user", master_account_sid=account.object_sid)
    lab.ad_objects.append(mailbox)
    assert lab.linked_mailboxes() == [(mailbox, None)]
    assert lab.metaverse_anchors() == {mailbox.object_guid: ""}


def test_the_resource_forest_scenario_still_loads_and_joins(tmp_path):
    lab = scenario.build("resource-forest", users=20)
    path = tmp_path / "lab.json"
    path.write_text(store.dumps(lab))
    loaded = store.load(path)
    assert [a.sam for _m, a in loaded.linked_mailboxes()] == list(scenario.LINKED_USERS)
