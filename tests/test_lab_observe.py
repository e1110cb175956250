"""The lab tenant's observation: each user as the tenant reports it (issue 19 builds them fast,
positionally: this checks that every field lands where CloudUser's keywords would put it)."""

from providers.lab import scenario, store
from providers.lab.provider import LabTenant, _licences
from reconciler.model import CloudUser, MailboxState
from reconciler.provider import UserSelection


def test_each_user_is_observed_with_each_field_in_its_place(tmp_path):
    lab = scenario.build("default", users=20)
    ready = [u for u in lab.cloud_users if u.mailbox_ready_at is None and u.licenses]
    ready[0].mailbox_ready_at = lab.clock + 30  # pending
    ready[1].mailbox_ready_at = lab.clock  # present
    lab.cloud_users[4].deleted_at = lab.clock
    path = tmp_path / "lab.json"
    store.save(lab, path)
    loaded = store.load(path)  # the AD users' classes as a loaded lab has them, not built
    classes = {u.object_guid: u.object_class for u in lab.ad_users}
    expected = [
        CloudUser(
            id=u.id,
            upn=u.upn,
            synced=u.synced,
            on_prem_dn=u.on_prem_dn,
            usage_location=u.usage_location,
            licenses=_licences(u),
            mailbox=MailboxState(lab.mailbox_state(u)),
            object_type=classes.get(u.immutable_id) if u.synced else None,
        )
        for u in lab.cloud_users
        if u.deleted_at is None
    ]
    observed = LabTenant(loaded).observe(UserSelection()).users
    assert [(u.id, *map(repr, _values(u))) for u in observed] == [(u.id, *map(repr, _values(u))) for u in expected]
    assert {u.mailbox for u in observed} >= {MailboxState.PRESENT, MailboxState.PENDING, MailboxState.ABSENT}
    assert {u.object_type for u in observed} >= {"user", "inetOrgPerson", None}
    assert any(u.licenses for u in observed) and any(u.on_prem_dn for u in observed) and any(u.usage_location for u in observed)


def _values(user):
    return (user.upn, user.synced, user.on_prem_dn, user.usage_location, user.licenses, user.mailbox, user.object_type)
