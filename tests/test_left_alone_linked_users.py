"""scenario.LINKED_USERS named the linked accounts of a resource-forest lab only below 100 users
(their sams are padded to the width of --users: "user004" from 100 on). linked_users(users) names
them at any size, from the same positions and width the lab is built with."""

import pytest

from providers.lab import scenario


@pytest.mark.parametrize("users", [6, 99, 100, 1000])
def test_linked_users_names_the_labs_linked_accounts_at_any_size(users):
    lab = scenario.build("resource-forest", users=users)
    assert scenario.linked_users(users) == tuple(account.sam for _mailbox, account in lab.linked_mailboxes())


def test_the_constant_is_the_answer_below_100_users():
    assert scenario.LINKED_USERS == scenario.linked_users(20) == scenario.linked_users(99) == ("user04", "user05", "user06")
    assert scenario.linked_users(100) == ("user004", "user005", "user006")
