"""Every server change proves itself: the step reads back what it changed, over real PSRP.

The provider talks WS-Man to the lab's loopback WinRM endpoint (what `lab serve`
runs); the lab's interpreter behaves like .NET where it matters (``List<string>.Remove``
is case-sensitive and returns False). A change the server does not take is made to
happen by making the lab drop it.
"""

import json

import pytest

from conftest import EXAMPLE, end_state
from providers.lab import scenario
from providers.lab.provider import LabTarget, LabTenant
from reconciler.apply import Status, apply_plan, observe
from reconciler.errors import ProviderError
from reconciler.journal import Journal
from reconciler.loader import load_desired
from reconciler.operations import CreateRule, SetExcludedAttributes
from reconciler.plan import build_plan
from reconciler.provider import Target

def test_an_attribute_spelt_in_another_case_is_excluded_and_read_back(served):
    # validate accepts "msexchmailboxguid"; the connector's list spells it msExchMailboxGuid,
    # and List<string>.Remove("msexchmailboxguid") removes nothing.
    lab, _endpoint, server = served()
    outcome = server.apply(SetExcludedAttributes(("msexchmailboxguid",)))
    assert [a.lower() for a in lab.aad_connector().excluded_attributes] == ["msexchmailboxguid"]
    assert outcome.detail == "read back: AttributeInclusionList without msexchmailboxguid"
    assert server.observe().connectors_of_kind("AAD")[0].excluded_attributes == ("msExchMailboxGuid",)


def test_an_exclusion_the_server_did_not_take_fails_with_the_read_back(served, monkeypatch):
    lab, _endpoint, server = served()
    monkeypatch.setattr(type(lab), "set_excluded_attributes", lambda self, attributes: None)
    with pytest.raises(ProviderError) as err:
        server.apply(SetExcludedAttributes(("msExchMailboxGuid",)))
    assert str(err.value) == (
        "entra-connect: export attribute filter: the server did not take the change: AttributeInclusionList still holds "
        "msExchMailboxGuid (read back after the change; the step is not done)"
    )


def test_a_rule_the_server_did_not_take_stops_the_apply_and_resume_finishes_it(served, tmp_path, monkeypatch):
    desired = load_desired(EXAMPLE)
    reference = scenario.build("default", users=8)
    plan = build_plan(desired, observe(LabTarget(reference), desired), "lab")
    apply_plan(plan, desired, LabTarget(reference), approvals=frozenset(plan.approvals_needed), force=True)

    lab, _endpoint, server = served()
    real_put_rule = type(lab).put_rule
    dropped = []

    def put_rule_once_dropped(self, rule):
        if not dropped and not rule.is_standard:
            dropped.append(rule.name)  # the server answers, but the copy is not there
            return
        real_put_rule(self, rule)

    monkeypatch.setattr(type(lab), "put_rule", put_rule_once_dropped)
    target = Target(server, LabTenant(lab))
    journal = Journal(tmp_path / "journal.jsonl")
    plan = build_plan(desired, observe(target, desired), "served lab")
    report = apply_plan(plan, desired, target, approvals=frozenset(plan.approvals_needed), force=True, journal=journal)

    failed = [r for r in report.results if r.status is Status.FAILED]
    assert len(failed) == 1 and isinstance(next(s for s in plan.steps if s.id == failed[0].step_id).operation, CreateRule)
    assert failed[0].detail.startswith(f"entra-connect: rule {dropped[0]!r}: the server did not take the change: the rule is not there")
    assert lab.server.sync_cycle_enabled, "the scheduler is back on"
    records = [json.loads(line) for line in journal.path.read_text().splitlines()]
    done = [r for r in records if r.get("event") == "step-end" and r["status"] == "done" and r["step"] != "scheduler.restore"]
    assert done and all(r["detail"].startswith("read back: ") for r in done)

    # apply --resume: observe again, plan what is left, finish the job.
    resumed_plan = build_plan(desired, observe(target, desired), "served lab")
    resumed = apply_plan(resumed_plan, desired, target, approvals=frozenset(resumed_plan.approvals_needed), force=True, journal=journal)
    assert resumed.ok, resumed.results
    assert end_state(lab) == end_state(reference)


def test_immutable_tags_are_read_as_the_text_they_hold(served):
    # ImmutableTag is an object (its TagValue holds the text): read as an object, a
    # rewrite would send its Python form.
    lab, _endpoint, server = served()
    observed = server.observe()
    stock = observed.rules_named("In from AD - User Exchange")[0]
    assert stock.immutable_tag == "Microsoft.InfromADUserExchange.004"
    assert {r.name: r.immutable_tag for r in observed.rules} == {r.name: r.immutable_tag for r in lab.server.rules}


def test_every_script_imports_the_module_it_uses(served):
    _lab, _endpoint, server = served()
    with pytest.raises(ProviderError, match="The term 'Get-ADSyncScheduler' is not recognized"):
        server.session.invoke("$ErrorActionPreference = 'Stop'\nGet-ADSyncScheduler | ConvertTo-Json -Compress", "probe")
    assert server.observe_script.splitlines()[:2] == ["$ErrorActionPreference = 'Stop'", "Import-Module ADSync"]


def test_a_start_that_loses_the_race_with_the_scheduler_waits_and_starts_again(served, monkeypatch):
    from reconciler.model import SyncPolicy
    from reconciler.operations import RunSyncCycle

    lab, _endpoint, server = served()
    real_start = type(lab).start_cycle
    raced = []

    def scheduler_first(self, policy):
        if not raced:
            # The scheduler, just resumed, starts its Delta a moment before our start.
            raced.append(real_start(self, SyncPolicy.DELTA))
        return real_start(self, policy)

    monkeypatch.setattr(type(lab), "start_cycle", scheduler_first)
    outcome = server.apply(RunSyncCycle(SyncPolicy.INITIAL))
    assert raced and outcome.detail.startswith("Initial cycle ") and outcome.detail.endswith("all runs succeeded")
    profiles = [r.profile for r in lab.server.run_history if r.connector == lab.ad_connector().name]
    assert profiles[-4:] == ["Delta Import", "Delta Synchronization", "Full Import", "Full Synchronization"]


def test_a_start_the_server_refuses_otherwise_is_one_line(served, monkeypatch):
    from reconciler.errors import RefusedError as Refused
    from reconciler.model import SyncPolicy
    from reconciler.operations import RunSyncCycle

    lab, _endpoint, server = served()

    def refuse(self, policy):
        raise Refused("entra-connect", "sync cycle", "The sync engine is not running")

    monkeypatch.setattr(type(lab), "start_cycle", refuse)
    with pytest.raises(ProviderError) as err:
        server.apply(RunSyncCycle(SyncPolicy.INITIAL))
    assert str(err.value) == "entra-connect: sync cycle: Start-ADSyncSyncCycle failed: The sync engine is not running"


def test_an_ou_scope_change_touches_only_the_partitions_it_names(served):
    from reconciler.operations import SetContainerScope

    lab = scenario.build("default", users=8)
    other_domain = "OU=Users,DC=fabrikam,DC=com"
    lab.set_container_scope(["OU=Corp,DC=contoso,DC=com", other_domain], [])
    lab, _endpoint, server = served(lab)
    outcome = server.apply(SetContainerScope(("OU=Corp,DC=contoso,DC=com",), ("OU=ServiceAccounts,OU=Corp,DC=contoso,DC=com",)))
    assert outcome.detail == "read back: 1 container(s) included, 1 excluded"
    ad = lab.ad_connector()
    assert other_domain in ad.included_containers, "the fabrikam.com partition keeps its inclusion list"
    assert set(ad.included_containers) == {"OU=Corp,DC=contoso,DC=com", other_domain}
    assert ad.excluded_containers == ("OU=ServiceAccounts,OU=Corp,DC=contoso,DC=com",)


def test_a_disabled_threshold_reads_as_disabled_though_it_keeps_a_count(served):
    lab = scenario.build("default", users=8)
    lab.set_deletion_threshold(None)
    lab, endpoint, server = served(lab)
    assert server.observe().deletion_threshold is None
    # The threshold is read on its own, and only with the parameter the module offers.
    assert "Get-Command -Name 'Get-ADSyncExportDeletionThreshold'" in endpoint.scripts[-1]


def test_a_build_that_takes_aadcredential_is_never_prompted(served):
    from reconciler.operations import SetDeletionThreshold

    lab = scenario.build("default", users=8)
    lab.server.build = "2.2.8.0"
    lab, _endpoint, server = served(lab)
    observed = server.observe()  # does not call the cmdlet (it would prompt): unknown
    assert observed.deletion_threshold is None and lab.server.deletion_threshold == 500
    with pytest.raises(ProviderError) as err:
        server.apply(SetDeletionThreshold(1500))
    assert "takes -AADCredential, not -AADUserName (build 2.2.8.0): syncprep sends no Entra ID password" in str(err.value)
    assert lab.server.deletion_threshold == 500


def test_bringing_the_ou_back_is_not_done_while_the_server_still_excludes_it(served, monkeypatch):
    """Review finding: the read-back never checked a list that must become empty."""
    from reconciler.operations import SetContainerScope

    corp, hybrid = "OU=Corp,DC=contoso,DC=com", "OU=HybridUsers,OU=Corp,DC=contoso,DC=com"
    lab = scenario.build("default", users=8)
    lab.set_container_scope((corp,), (hybrid,))  # Solution 2 took the OU out
    lab, _endpoint, server = served(lab)
    real = type(lab).set_container_scope
    # The server answers but keeps its exclusion list.
    monkeypatch.setattr(type(lab), "set_container_scope", lambda self, inc, exc, **kw: real(self, inc, self.ad_connector().excluded_containers, **kw))
    with pytest.raises(ProviderError) as err:
        server.apply(SetContainerScope((corp,), ()))
    assert "the exclusion list of partition dc=contoso,dc=com reads" in str(err.value)
    assert "the step is not done" in str(err.value)
    assert lab.ad_connector().excluded_containers == (hybrid,)
