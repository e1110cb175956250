"""The Graph provider, run through the real msgraph-sdk over real HTTP against the lab's emulator.

Every test compares with the lab itself: what the in-process lab provider observes,
or the state the lab ends in after the in-process provider applied the same thing.
"""

import copy
import math
import subprocess
import sys

import pytest
from attrs import evolve

from providers.graph import GraphTenant, open_tenant
from providers.lab import scenario
from providers.lab.graph_emulator import EXCHANGE_PLAN, GraphEmulator
from providers.lab.host import LabHost
from providers.lab.provider import LabTenant
from reconciler.desired import GraphTargetSpec
from reconciler.errors import ConfigError, ProviderError
from reconciler.model import MailboxState, UserRef
from reconciler.operations import AssignLicense, PurgeDeletedUsers, RemoveLicense, VerifyMailboxes
from reconciler.provider import UserSelection

TOKEN = "graph-provider-test-token"
TOKEN_ENV = "SYNCPREP_TEST_GRAPH_TOKEN"
E3 = scenario.ENTERPRISEPACK_ID
HYBRID = UserSelection(frozenset(), (scenario.HYBRID_OU,))


def decorate(lab):
    """Give the default world every case the provider must read: a pending mailbox,
    a group licence, deleted users."""
    pending = lab.cloud_user("user04@contoso.com")
    pending.mailbox_guid = None  # no on-premises mailbox: licensing creates one, still provisioning
    lab.assign_license(pending.id, E3)
    grouped = lab.cloud_user("user05@contoso.com")
    lab.assign_license(grouped.id, E3)
    grouped.license(E3).by_group = True
    # Long enough ago that Graph's "pending" window is over: within it, a licensed user
    # without a mailbox reads as pending through Graph (it cannot know one will never come).
    grouped.license(E3).assigned_at = lab.clock - 2 * lab.provisioning_minutes
    for key in ("user18@contoso.com", "user19@contoso.com"):
        lab.cloud_user(key).deleted_at = lab.clock - 7
    return lab


@pytest.fixture
def lab():
    return decorate(scenario.build(users=20))


@pytest.fixture
def host(lab):
    return LabHost(lab)


@pytest.fixture
def emulator(host):
    with GraphEmulator(host, token=TOKEN, retry_after=0.01) as emu:
        yield emu


@pytest.fixture
def connect(monkeypatch, lab):
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    opened = []

    def connect(emu, **tuning):
        spec = GraphTargetSpec(endpoint=emu.base_url, auth="token-env", token_env=TOKEN_ENV, mailbox_pending_minutes=lab.provisioning_minutes)
        tuning.setdefault("backoff", 0.005)
        tuning.setdefault("reread_delay", 0.01)
        tuning.setdefault("poll_interval", 0.02)
        tenant = open_tenant(spec, **tuning)
        opened.append(tenant)
        return tenant

    yield connect
    for tenant in opened:
        tenant.close()


def lab_view(lab, selection):
    """What the Graph provider must return: the lab's observation, in the selection,
    with the mailbox of unlicensed users unknown (they are not probed)."""
    state = LabTenant(lab).observe(selection)
    users = [u if u.licenses else evolve(u, mailbox=MailboxState.UNKNOWN) for u in state.users if selection.matches(u)]
    # Graph does not say a user's on-premises object class; the lab does.
    users = [evolve(u, object_type=None) for u in users]
    # Graph also names the Exchange plans of a SKU (the emulator's are the real EXCHANGE_S_ENTERPRISE).
    skus = tuple(evolve(s, exchange_plan_ids=(EXCHANGE_PLAN[1],)) if s.includes_exchange else s for s in state.skus)
    return evolve(state, users=tuple(users), skus=skus)


def keyed(users):
    # eq=False fields (ids, licence times) are compared too: the planner acts on them.
    return sorted(((u.upn, u.id, tuple((a.sku_id, a.by_group, a.assigned_at) for a in u.licenses), u) for u in users), key=lambda t: t[0])


def licences(lab):
    return {u.upn: sorted((l.sku_id, l.assigned_at, l.by_group) for l in u.licenses) for u in lab.cloud_users}


# ---------------------------------------------------------------------------- observe


def test_observe_equals_the_lab(lab, emulator, connect):
    selection = UserSelection(frozenset({"admin@contoso.onmicrosoft.com", "nobody@contoso.com"}), (scenario.HYBRID_OU,))
    got = connect(emulator).observe(selection)
    want = lab_view(lab, selection)
    assert keyed(got.users) == keyed(want.users)
    assert got.skus == want.skus and [s.includes_exchange for s in got.skus] == [True, False]
    assert [(d.id, d.upn, d.deleted_at, d.synced, d.on_prem_dn) for d in got.deleted_users] == [
        (d.id, d.upn, d.deleted_at, d.synced, d.on_prem_dn) for d in want.deleted_users
    ]
    mailboxes = {u.upn: u.mailbox for u in got.users}
    # The cases are all there, so the comparison means something.
    assert mailboxes["admin@contoso.onmicrosoft.com"] is MailboxState.PRESENT
    assert mailboxes["user04@contoso.com"] is MailboxState.PENDING
    assert mailboxes["user01@contoso.com"] is MailboxState.ABSENT
    assert {u.upn: u.license(E3).by_group for u in got.users if u.has_license(E3)}["user05@contoso.com"] is True
    assert "nobody@contoso.com" not in mailboxes and "svc01@contoso.com" not in mailboxes


SHAREPOINT_PLAN = "5dbe027f-2339-4123-9542-606e4d348a72"


def test_observe_reads_disabled_plans_and_exchange_plan_ids(lab, emulator, connect):
    emulator.set_disabled_plans("user01@contoso.com", E3, [SHAREPOINT_PLAN, EXCHANGE_PLAN[1]])
    state = connect(emulator).observe(HYBRID)
    by_upn = {u.upn: u for u in state.users}
    assert by_upn["user01@contoso.com"].license(E3).disabled_plans == tuple(sorted([SHAREPOINT_PLAN, EXCHANGE_PLAN[1]]))
    assert by_upn["user04@contoso.com"].license(E3).disabled_plans == ()
    assert [(s.part_number, s.exchange_plan_ids) for s in state.skus] == [("ENTERPRISEPACK", (EXCHANGE_PLAN[1],)), ("EMS", ())]


def test_skus_that_apply_to_the_company_are_left_out(lab, emulator, connect, monkeypatch):
    serve = emulator._subscribed_skus

    def with_a_company_sku(params, query, body):
        reply = serve(params, query, body)
        company = dict(reply.body["value"][0], skuId="11111111-2222-3333-4444-555555555555", skuPartNumber="TENANT_ADDON", appliesTo="Company")
        reply.body["value"].append(company)
        return reply

    monkeypatch.setattr(emulator, "_subscribed_skus", with_a_company_sku)
    assert [s.part_number for s in connect(emulator).observe(HYBRID).skus] == ["ENTERPRISEPACK", "EMS"]


def test_remove_and_assign_again_keeps_disabled_plans(lab, emulator, connect):
    emulator.set_disabled_plans("user01@contoso.com", E3, [SHAREPOINT_PLAN])
    tenant = connect(emulator)
    before = {u.upn: u for u in tenant.observe(HYBRID).users}["user01@contoso.com"].license(E3).disabled_plans
    user = refs(lab, "user01@contoso.com", "user08@contoso.com")
    assert tenant.apply(RemoveLicense(E3, "ENTERPRISEPACK", user[:1])).failures == ()
    got = tenant.apply(AssignLicense(E3, "ENTERPRISEPACK", user, (("user01@contoso.com", before),)))
    assert got.failures == ()
    after = {u.upn: u for u in tenant.observe(HYBRID).users}
    assert before == (SHAREPOINT_PLAN,)
    assert after["user01@contoso.com"].license(E3).disabled_plans == before
    assert after["user08@contoso.com"].license(E3).disabled_plans == ()


def test_pending_turns_absent_after_the_window(lab, host, emulator, connect):
    tenant = connect(emulator)
    assert {u.upn: u.mailbox for u in tenant.observe(HYBRID).users}["user04@contoso.com"] is MailboxState.PENDING
    with host.session() as world:
        world.cloud_user("user04@contoso.com").mailbox_ready_at = None  # provisioning never finished
        world.advance(world.provisioning_minutes)
    assert {u.upn: u.mailbox for u in tenant.observe(HYBRID).users}["user04@contoso.com"] is MailboxState.ABSENT


def test_observe_request_counts_are_minimal(monkeypatch):
    lab = scenario.build(users=2100)
    for user in lab.active_cloud_users()[4:49]:  # 45 more licensed users
        if user.usage_location and user.synced:
            lab.assign_license(user.id, E3)
    synced = sum(1 for u in lab.active_cloud_users() if u.synced)
    with GraphEmulator(LabHost(lab), token=TOKEN) as emu:
        monkeypatch.setenv(TOKEN_ENV, TOKEN)
        tenant = open_tenant(GraphTargetSpec(endpoint=emu.base_url, auth="token-env", token_env=TOKEN_ENV))
        try:
            state = tenant.observe(HYBRID)
        finally:
            tenant.close()
    probes = sum(1 for u in state.users if u.licenses)
    assert probes >= 45
    assert emu.counters["GET /users"] == math.ceil(synced / 999) == 3
    assert emu.counters["POST /$batch"] == math.ceil(probes / 20)
    assert emu.counters["item GET /users/{id}/mailboxSettings"] == probes
    assert emu.counters["GET /subscribedSkus"] == 1
    assert emu.counters["GET /directory/deletedItems/graph.user"] == 1
    assert emu.counters["http_requests"] == 3 + math.ceil(probes / 20) + 2
    assert tenant.stats["requests"] == emu.counters["http_requests"]


# ---------------------------------------------------------------------------- apply


def refs(lab, *upns):
    return tuple(UserRef(lab.cloud_user(upn).id, lab.cloud_user(upn).upn) for upn in upns)


def both(lab, operation, tenant):
    """Apply through Graph and, on a copy of the world, through the lab provider."""
    twin = copy.deepcopy(lab)
    expected = LabTenant(twin).apply(operation)
    got = tenant.apply(operation)
    return got, expected, twin


def test_assign_with_usage_location_and_count_violations(lab, emulator, connect):
    upns = [f"user{i:02d}@contoso.com" for i in range(6, 18)] + ["contractor01@contoso.com"]
    operation = AssignLicense(E3, "ENTERPRISEPACK", refs(lab, *upns))
    # 20 units, 6 used: 14 free for 12 eligible (user07 has no usage location)... make it 1 short.
    lab.skus[0].prepaid = 6 + 11
    got, expected, twin = both(lab, operation, connect(emulator))
    assert got == expected
    reasons = dict(got.failures)
    assert reasons["user07@contoso.com"] == "License assignment cannot be done for user with invalid usage location."
    assert reasons["contractor01@contoso.com"] == f"Subscription with SKU {E3} does not have any available licenses."
    assert got.detail == "11 of 13 done"
    assert licences(lab) == licences(twin)


def test_remove_refuses_group_licences_clearly(lab, emulator, connect):
    operation = RemoveLicense(E3, "ENTERPRISEPACK", refs(lab, "user01@contoso.com", "user05@contoso.com", "user06@contoso.com"))
    got, expected, twin = both(lab, operation, connect(emulator))
    assert got == expected
    assert dict(got.failures) == {
        "user05@contoso.com": "User license is inherited from a group membership and it cannot be removed directly from the user.",
        "user06@contoso.com": "User does not have a corresponding license.",
    }
    assert lab.cloud_user("user01@contoso.com").license(E3) is None
    assert licences(lab) == licences(twin)


def test_missing_user_is_a_per_user_failure(lab, emulator, connect):
    operation = AssignLicense(E3, "ENTERPRISEPACK", (UserRef("00000000-0000-0000-0000-000000000001", "ghost@contoso.com"),) + refs(lab, "user08@contoso.com"))
    got = connect(emulator).apply(operation)
    assert got.detail == "1 of 2 done"
    assert got.failures[0][0] == "ghost@contoso.com" and "does not exist" in got.failures[0][1]


def test_purge_deleted_users(lab, emulator, connect):
    deleted = [u for u in lab.cloud_users if u.deleted_at is not None]
    operation = PurgeDeletedUsers(tuple(UserRef(u.id, u.upn) for u in deleted) + (UserRef("00000000-0000-0000-0000-000000000002", "ghost@contoso.com"),))
    got, expected, twin = both(lab, operation, connect(emulator))
    assert got == expected and got.detail == "2 of 3 done"
    assert not [u for u in lab.cloud_users if u.deleted_at is not None]
    assert connect(emulator).observe(HYBRID).deleted_users == ()


def test_verify_mailboxes_waits_while_pending(lab, emulator, connect):
    host = LabHost(lab, speed=600.0)  # ten lab minutes per real second: provisioning finishes while polling
    with GraphEmulator(host, token=TOKEN) as running:
        tenant = connect(running, verify_timeout=10.0)
        got = tenant.apply(VerifyMailboxes(refs(lab, "user04@contoso.com", "user01@contoso.com")))
    assert got.failures == (("user01@contoso.com", "no Exchange Online mailbox (absent)"),)
    assert lab.mailbox_state(lab.cloud_user("user04@contoso.com")) == "present"


def test_an_unknown_write_is_reread_not_repeated(lab, emulator, connect):
    tenant = connect(emulator)
    emulator.reset_counters()
    emulator.force_faults("drop-after")  # the batch is applied, then the connection drops
    emulator.force_faults("504-after", "503", items=True)
    got = tenant.apply(AssignLicense(E3, "ENTERPRISEPACK", refs(lab, "user08@contoso.com", "user09@contoso.com", "user10@contoso.com")))
    assert got.failures == () and got.detail == "3 of 3 done"
    applied = [w for w in emulator.writes if w[3] == "applied"]
    assert sorted(w[1] for w in applied) == sorted(r.id for r in refs(lab, "user08@contoso.com", "user09@contoso.com", "user10@contoso.com"))
    assert [w for w in emulator.writes if w[3] != "applied"] == []  # nothing sent twice
    assert emulator.counters["item GET /users/{id}"] >= 3  # the re-reads


def test_a_failed_batch_backs_off_once_and_is_sent_again_whole(lab, emulator, connect):
    from providers.graph.transport import Item

    tenant = connect(emulator, backoff=0.05)
    transport = tenant._run(tenant._client())
    upns = [u.upn for u in lab.active_cloud_users()][:20]
    emulator.reset_counters()
    emulator.force_faults("504")  # the whole $batch of 20 answers 504
    answers = tenant._run(transport.run([Item("GET", f"/users/{upn}?$select=id") for upn in upns], "users"))
    assert [a.status for a in answers] == [200] * 20
    assert emulator.counters["POST /$batch"] == 2 and emulator.counters["batch_items"] == 20
    assert transport.stats["backoffs"] == 1 and transport.stats["retries"] == 20


def test_a_lagging_reread_is_read_again_before_repeating(lab, emulator, connect):
    tenant = connect(emulator)
    emulator.reset_counters()
    emulator.lag_reads(1)  # the first re-read still shows the licence that was just removed
    emulator.force_faults("504-after", items=True)
    got = tenant.apply(RemoveLicense(E3, "ENTERPRISEPACK", refs(lab, "user01@contoso.com")))
    assert got.failures == () and got.detail == "1 of 1 done"
    assert [w[3] for w in emulator.writes] == ["applied"]  # not sent again
    assert emulator.counters["stale reads"] == 1 and emulator.counters["item GET /users/{id}"] == 2


def test_a_repeated_removal_answered_already_so_is_done(lab, emulator, connect):
    tenant = connect(emulator)
    emulator.reset_counters()
    emulator.lag_reads(2)  # both re-reads lag: the removal is sent again, and Graph says it is gone
    emulator.force_faults("504-after", items=True)
    got = tenant.apply(RemoveLicense(E3, "ENTERPRISEPACK", refs(lab, "user01@contoso.com")))
    assert got.failures == () and got.detail == "1 of 1 done"
    assert [w[3] for w in emulator.writes] == ["applied", "refused"]
    assert lab.cloud_user("user01@contoso.com").license(E3) is None


def test_a_repeated_purge_answered_404_is_done(lab, emulator, connect):
    deleted = [UserRef(u.id, u.upn) for u in lab.cloud_users if u.deleted_at is not None][:1]
    tenant = connect(emulator)
    emulator.reset_counters()
    emulator.lag_reads(2)
    emulator.force_faults("504-after", items=True)
    got = tenant.apply(PurgeDeletedUsers(tuple(deleted)))
    assert got.failures == () and got.detail == "1 of 1 done"
    assert [w[3] for w in emulator.writes] == ["applied", "refused"]
    assert emulator.counters["stale reads"] == 2


def test_throttling_and_faults_converge_without_losing_or_repeating(lab, host, connect):
    with GraphEmulator(host, token=TOKEN, rate=60, burst=10, retry_after=0.02, fault_rate=0.10, seed=7) as emu:
        tenant = connect(emu, max_attempts=12)
        state = tenant.observe(HYBRID)
        assert keyed(state.users) == keyed(lab_view(lab, HYBRID).users)
        lab.skus[0].prepaid = 100  # which users get the last units would depend on the order of sending
        twin = copy.deepcopy(lab)
        lab_tenant = LabTenant(twin)
        everyone = [u.upn for u in state.users if u.usage_location]
        unlicensed = [u.upn for u in state.users if u.usage_location and not u.has_license(E3)]
        operations = [
            RemoveLicense(E3, "ENTERPRISEPACK", refs(lab, "user01@contoso.com", "user02@contoso.com", "user03@contoso.com")),
            AssignLicense(scenario.EMS_ID, "EMS", refs(lab, *everyone)),
            AssignLicense(E3, "ENTERPRISEPACK", refs(lab, *unlicensed, "user01@contoso.com", "user02@contoso.com", "user03@contoso.com")),
            PurgeDeletedUsers(tuple(UserRef(u.id, u.upn) for u in lab.cloud_users if u.deleted_at is not None)),
        ]
        for operation in operations:
            expected = lab_tenant.apply(operation)
            got = tenant.apply(operation)
            assert (got.detail, sorted(got.failures)) == (expected.detail, sorted(expected.failures)), operation
    assert emu.counters["faults"] >= 3 and emu.counters["throttled"] >= 3, emu.counters
    # Same licences as the lab's own provider made (times differ only if a change was made twice).
    assert licences(lab) == licences(twin)
    assert [u.id for u in lab.cloud_users] == [u.id for u in twin.cloud_users]
    writes = [(w[1], w[2]) for w in emu.writes if w[3] == "applied"]
    assert len(writes) == len(set(writes)), "a licence change was made twice"
    # A blind repeat would show up as a no-op add or a refused remove ("does not have").
    assert [w for w in emu.writes if w[3] != "applied"] == [], "a write was repeated blindly"
    assert len(writes) == 3 + len(everyone) + len(unlicensed) + 3 + 2


# ---------------------------------------------------------------------------- failures in one line


def test_an_html_page_instead_of_json_is_one_line(lab, emulator, connect):
    tenant = connect(emulator)
    emulator.force_faults("html")  # a proxy answers the first request with 200 and a sign-in page
    with pytest.raises(ProviderError) as caught:
        tenant.observe(HYBRID)
    assert "unexpected answer from http://127.0.0.1" in caught.value.message
    assert "200 with a body that is not JSON (text/html)" in caught.value.message


def test_an_html_page_instead_of_a_batch_answer_is_one_line(lab, emulator, connect):
    # A test of its own: requests of a failed observe that were already sent may reach the
    # emulator after it raised, and take a forced fault meant for later.
    tenant = connect(emulator)
    emulator.force_faults("html")  # the $batch itself
    with pytest.raises(ProviderError) as caught:
        tenant.apply(AssignLicense(E3, "ENTERPRISEPACK", refs(lab, "user08@contoso.com")))
    assert "200 with a body that is not JSON (text/html)" in caught.value.message


def test_a_malformed_item_or_client_failure_is_one_line(lab, emulator, connect):
    tenant = connect(emulator)
    emulator.force_faults("html", items=True)  # the user read by UPN answers a page inside the batch
    with pytest.raises(ProviderError) as caught:
        tenant.observe(UserSelection(frozenset({"user01@contoso.com"}), ()))
    assert caught.value.resource == "observe"
    assert caught.value.message.startswith("unexpected answer from Microsoft Graph (AttributeError")
    transport = tenant._run(tenant._client())

    async def broken(*args, **kwargs):
        raise ValueError("Illegal header value\nsecond line")

    transport.adapter.send_primitive_async = broken
    with pytest.raises(ProviderError) as caught:
        tenant.observe(HYBRID)
    assert caught.value.message == "unexpected answer from Microsoft Graph (ValueError: Illegal header value)"


def test_wrong_token_is_one_clear_line(emulator, monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, "not-the-token-s3cret")
    tenant = open_tenant(GraphTargetSpec(endpoint=emulator.base_url, auth="token-env", token_env=TOKEN_ENV), backoff=0.005)
    try:
        with pytest.raises(ProviderError) as caught:
            tenant.observe(HYBRID)
    finally:
        tenant.close()
    text = str(caught.value)
    assert "\n" not in text and "401" in text and TOKEN_ENV in text
    assert "s3cret" not in text


def test_missing_token_variable(emulator, monkeypatch):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    with pytest.raises(ProviderError, match=f"{TOKEN_ENV} is not set"):
        open_tenant(GraphTargetSpec(endpoint=emulator.base_url, auth="token-env", token_env=TOKEN_ENV))


@pytest.mark.parametrize(
    "permission, action",
    [
        ("User.Read.All", "observe"),
        ("MailboxSettings.Read", "observe"),
        ("LicenseAssignment.ReadWrite.All", "assign"),
        ("User.DeleteRestore.All", "purge"),
    ],
)
def test_a_missing_permission_is_named(lab, host, connect, permission, action):
    with GraphEmulator(host, token=TOKEN, denied={permission}) as emu:
        tenant = connect(emu)
        with pytest.raises(ProviderError) as caught:
            if action == "observe":
                tenant.observe(HYBRID)
            elif action == "assign":
                tenant.apply(AssignLicense(E3, "ENTERPRISEPACK", refs(lab, "user08@contoso.com")))
            else:
                deleted = next(u for u in lab.cloud_users if u.deleted_at is not None)
                tenant.apply(PurgeDeletedUsers((UserRef(deleted.id, deleted.upn),)))
    text = str(caught.value)
    assert permission in text and "403" in text and "\n" not in text


def test_throttled_beyond_the_budget(lab, host, connect):
    # Enough units for the three list reads, then nothing: Graph asks for longer than we wait.
    with GraphEmulator(host, token=TOKEN, rate=0.0001, burst=4, retry_after=30) as emu:
        state = connect(emu, max_retry_after=1.0).observe(HYBRID)
        # A mailbox read that was throttled out is unknown, never absent.
        assert {u.mailbox for u in state.users if u.licenses} == {MailboxState.UNKNOWN}
        with pytest.raises(ProviderError, match="throttled by Microsoft Graph.*beyond the retry budget"):
            connect(emu, max_retry_after=1.0).observe(HYBRID)
    with GraphEmulator(host, token=TOKEN, rate=0.0001, burst=1, retry_after=0.01) as emu:
        got = connect(emu, max_attempts=3).apply(AssignLicense(E3, "ENTERPRISEPACK", refs(lab, "user08@contoso.com", "user09@contoso.com")))
    assert got.detail == "1 of 2 done"
    assert "beyond the retry budget (3 attempts" in got.failures[0][1]


def test_pacer_learns_the_accepted_rate_from_two_429s():
    from providers.graph.transport import Pacer

    pacer = Pacer(margin=1.1, probe=0.02, idle=2.0)
    pacer.accepted(0.0, 500)
    pacer.throttled(0.2, 1.0)  # one 429 says a limit was met, not what it is
    assert pacer.rate is None and pacer.delay(1.2, 20) == 0.0
    pacer.accepted(1.3, 480)
    pacer.accepted(1.4, 20)
    pacer.throttled(1.4, 1.0)  # 500 accepted in the 1.2 s since the first 429
    assert pacer.rate == pytest.approx(1.1 * 500 / 1.2)
    # After the Retry-After, batches leave one after another at that rate, however many ask at once.
    gaps = [pacer.delay(1.5, 20) for _ in range(3)]
    assert gaps == pytest.approx([0.9, 0.9 + 20 / pacer.rate, 0.9 + 40 / pacer.rate])


def test_pacer_keeps_its_rate_when_nothing_was_accepted_and_grows_it_by_the_second():
    from providers.graph.transport import Pacer

    pacer = Pacer(margin=1.0, probe=0.1, idle=2.0)
    pacer.throttled(0.0, 0.0)
    pacer.accepted(1.0, 100)
    pacer.throttled(1.0, 0.0)
    assert pacer.rate == pytest.approx(100)
    pacer.throttled(1.5, 0.0)  # Graph accepted nothing in between: no new measure (the Retry-After covers it)
    assert pacer.rate == pytest.approx(100)
    pacer.accepted(3.0, 20)  # two seconds without a 429, in one answer
    assert pacer.rate == pytest.approx(100 * 1.1**2)


def test_pacer_waits_out_long_retry_afters_but_starts_over_after_idle():
    from providers.graph.transport import Pacer

    pacer = Pacer(margin=1.0, idle=2.0)
    pacer.throttled(0.0, 3.0)  # Graph asks for 3 s: waiting it out is not being idle
    pacer.accepted(3.2, 50)
    pacer.throttled(3.5, 3.0)
    assert pacer.rate == pytest.approx(50 / 3.5)
    pacer.accepted(60.0, 20)  # a minute later, other work (reads after writes, say)
    assert pacer.rate is None, "a rate learned for other work is forgotten"
    pacer.throttled(60.1, 0.0)
    assert pacer.rate is None, "a span with an idle gap in it says nothing about the limit"


def test_after_a_429_new_slots_start_when_the_retry_after_ends():
    from providers.graph.transport import Pacer

    pacer = Pacer(margin=1.0)
    pacer.throttled(0.0, 0.0)
    pacer.accepted(1.0, 100)
    pacer.throttled(1.0, 0.0)  # 100 items/s
    assert [pacer.delay(1.0, 20) for _ in range(2)] == pytest.approx([0.0, 0.2])
    pacer.throttled(1.1, 1.0)
    assert [pacer.delay(1.2, 20) for _ in range(2)] == pytest.approx([0.9, 1.1])


def test_paced_licence_changes_under_a_token_bucket_are_each_made_once(monkeypatch):
    """Under a token bucket that answers 429, every change is made exactly once. Whether requests
    came inside a Retry-After window, and how many 429s pacing spares, depend on the clock:
    benchmarks/graph_observe.py measures them (the emulator's "early" count), not this test."""
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    world = scenario.build(users=650)
    users = tuple(UserRef(u.id, u.upn) for u in world.active_cloud_users() if u.synced and u.usage_location)[:600]
    with GraphEmulator(LabHost(world), token=TOKEN, rate=300, burst=60, retry_after=0.2) as emu:
        tenant = open_tenant(GraphTargetSpec(endpoint=emu.base_url, auth="token-env", token_env=TOKEN_ENV))
        try:
            got = tenant.apply(AssignLicense(scenario.EMS_ID, "EMS", users))
        finally:
            tenant.close()
        assert got.detail == "600 of 600 done"
        assert emu.counters["throttled"] > 0, "the bucket answered 429s: the test exercises the retries"
        assert [w for w in emu.writes if w[3] != "applied"] == [], "nothing made twice"


# ---------------------------------------------------------------------------- connection


def test_plain_http_only_to_loopback(monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    with pytest.raises(ConfigError, match="loopback"):
        open_tenant(GraphTargetSpec(endpoint="http://graph.example.com/v1.0", auth="token-env", token_env=TOKEN_ENV))
    for endpoint in ("http://127.0.0.1:8443/v1.0", "http://localhost:1", "http://[::1]:9/v1.0", "https://graph.example.com"):
        assert isinstance(open_tenant(GraphTargetSpec(endpoint=endpoint, auth="token-env", token_env=TOKEN_ENV)), GraphTenant)


@pytest.mark.parametrize(
    "cloud, base",
    [
        ("global", "https://graph.microsoft.com/v1.0"),
        ("usgov", "https://graph.microsoft.us/v1.0"),
        ("usgov-dod", "https://dod-graph.microsoft.us/v1.0"),
        ("china", "https://microsoftgraph.chinacloudapi.cn/v1.0"),
    ],
)
def test_national_clouds(cloud, base):
    tenant = open_tenant(GraphTargetSpec(cloud=cloud, auth="managed-identity"))
    assert tenant.base_url == base and tenant.describe() == f"Microsoft Graph at {base}"


def test_unknown_cloud_and_auth():
    with pytest.raises(ConfigError, match="unknown cloud"):
        open_tenant(GraphTargetSpec(cloud="mars"))
    with pytest.raises(ConfigError, match="unknown auth"):
        open_tenant(GraphTargetSpec(auth="password"))


def test_environment_credentials_missing_is_one_line(emulator, monkeypatch):
    for name in ("AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET", "AZURE_CLIENT_CERTIFICATE_PATH", "AZURE_USERNAME"):
        monkeypatch.delenv(name, raising=False)
    tenant = open_tenant(GraphTargetSpec(endpoint=emulator.base_url, auth="environment"))
    try:
        with pytest.raises(ProviderError) as caught:
            tenant.observe(HYBRID)
    finally:
        tenant.close()
    assert "\n" not in str(caught.value) and "AZURE_CLIENT_ID" in str(caught.value)


def test_importing_the_provider_does_not_import_the_sdk():
    code = (
        "import sys, providers.graph\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('msgraph', 'msgraph_core', 'kiota_abstractions', 'kiota_http', 'azure', 'httpx')]\n"
        "print(','.join(sorted(heavy)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=str(__import__("pathlib").Path(__file__).parents[1]))
    assert out.stdout.strip() == ""


def test_an_unreachable_endpoint_is_one_line(monkeypatch):
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again when the block ends: nobody listens there
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    tenant = open_tenant(GraphTargetSpec(endpoint=f"http://127.0.0.1:{port}/v1.0", auth="token-env", token_env=TOKEN_ENV), backoff=0.005, max_attempts=2)
    try:
        with pytest.raises(ProviderError) as caught:
            tenant.observe(HYBRID)
    finally:
        tenant.close()
    assert "cannot connect" in str(caught.value) and "\n" not in str(caught.value)


def test_resource_not_found_and_error_item_not_found_mean_no_mailbox(lab, emulator, connect):
    # Real Graph answers some users without a mailbox with these codes instead of
    # MailboxNotEnabledForRESTAPI: no mailbox (absent, or pending while recent), never unknown.
    emulator.no_mailbox_codes["user01@contoso.com"] = "ResourceNotFound"
    emulator.no_mailbox_codes["user04@contoso.com"] = "ErrorItemNotFound"
    mailboxes = {u.upn: u.mailbox for u in connect(emulator).observe(HYBRID).users}
    assert mailboxes["user01@contoso.com"] is MailboxState.ABSENT
    assert mailboxes["user04@contoso.com"] is MailboxState.PENDING
    # A user that is gone is still told apart (Request_ResourceNotFound): not "no mailbox".
    ref = UserRef("00000000-0000-0000-0000-00000000dead", "gone@contoso.com")
    outcome = connect(emulator).apply(VerifyMailboxes((ref,)))
    assert outcome.failures == (("gone@contoso.com", "no Exchange Online mailbox (missing user)"),)
