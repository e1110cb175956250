"""The Entra Connect provider end to end over real PSRP.

pypsrp talks WS-Man over HTTP to the lab's loopback WinRM endpoint; psrpcore runs
the PSRP layer there and the lab's PowerShell interpreter runs each script against
a lab. Every operation applied this way must leave the lab as the in-process lab
provider leaves its twin.
"""

import itertools
import re
import socket
import subprocess
import sys

import pytest
from attrs import evolve

from providers.entraconnect import PsrpServer, PsrpSession, open_server, scripts
from providers.lab import scenario, store
from providers.lab import winrm_endpoint
from providers.lab.host import LabHost
from providers.lab.provider import LabServer
from providers.lab.winrm_endpoint import WinRMEndpoint
from reconciler.desired import EntraConnectTargetSpec
from reconciler.errors import ProviderError, RefusedError
from reconciler.model import AttributeFlow, Direction, FlowType, JoinCondition, LinkType, ScopeCondition, SyncPolicy, SyncRule
from reconciler.operations import (
    CreateRule,
    RunSyncCycle,
    SetContainerScope,
    SetDeletionThreshold,
    SetExcludedAttributes,
    SetRuleDisabled,
    SetScheduler,
    UpdateRule,
)
from test_entraconnect_scripts import solution1_operations

USER, PASSWORD = "CONTOSO\\syncadmin", "lab-Pa55word!"
AAD_USER = "sync-admin@contoso.onmicrosoft.com"
SERVICE_OU = "OU=ServiceAccounts,OU=Corp,DC=contoso,DC=com"


def new_lab():
    return scenario.build("default", users=8)


@pytest.fixture
def served():
    """(lab, endpoint, server): a fresh lab behind a running endpoint and a connected provider."""
    made = []

    def make(lab=None, speed=None, monotonic=None, allow_staging=False, poll_interval=0.02, aad_username=AAD_USER):
        lab = lab or new_lab()
        host = LabHost(lab, speed=speed, **({"monotonic": monotonic} if monotonic else {}))
        endpoint = WinRMEndpoint(host, USER, PASSWORD)
        address, port = endpoint.start()
        session = PsrpSession(address, port=port, ssl=False, auth="basic", username=USER, password=PASSWORD)
        server = PsrpServer(session, allow_staging=allow_staging, poll_interval=poll_interval, cycle_timeout=20.0, aad_username=aad_username)
        made.append((endpoint, server))
        return lab, endpoint, server

    yield make
    for endpoint, server in made:
        server.close()
        endpoint.stop()


def snapshot(lab):
    return store.dumps(lab)


def test_importing_the_provider_does_not_import_pypsrp():
    code = "import sys, providers.entraconnect; print(sorted(m for m in sys.modules if m.startswith(('pypsrp', 'psrpcore', 'requests'))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_observe_through_psrp_equals_the_lab(served):
    lab, endpoint, server = served()
    observed = server.observe()
    assert observed == LabServer(lab).observe()
    assert [(r.connector, r.profile, r.result, r.started) for r in observed.run_history] == [
        (r.connector, r.profile, r.result, r.started) for r in LabServer(lab).observe().run_history
    ]
    # One script for the whole observation, and the threshold on its own (time-boxed).
    assert endpoint.scripts == [scripts.observe(AAD_USER), scripts.read_threshold(AAD_USER)]
    assert scripts.observe(AAD_USER) == server.observe_script


def test_observe_after_changes_still_equals_the_lab(served):
    lab = new_lab()
    lab.set_container_scope(["OU=Corp,DC=contoso,DC=com"], [SERVICE_OU])
    lab.set_excluded_attributes(["msExchMailboxGuid"])
    lab.set_deletion_threshold(None)
    lab.set_scheduler(False)
    lab, _endpoint, server = served(lab)
    assert server.observe() == LabServer(lab).observe()


def test_wrong_password_is_one_line_and_changes_nothing(served):
    lab, endpoint, _server = served()
    before = snapshot(lab)
    session = PsrpSession(*endpoint.address, ssl=False, auth="basic", username=USER, password="wrong")
    with pytest.raises(ProviderError) as err:
        PsrpServer(session).apply(SetScheduler(False))
    message = str(err.value)
    assert "authentication failed" in message and "\n" not in message and "wrong" not in message
    assert endpoint.scripts == [] and snapshot(lab) == before


def test_unreachable_host_is_one_line():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # The port is closed now: nothing listens there.
    session = PsrpSession("127.0.0.1", port=port, ssl=False, auth="basic", username=USER, password=PASSWORD, connection_timeout=3)
    with pytest.raises(ProviderError) as err:
        PsrpServer(session).observe()
    assert "cannot reach the server: connection refused" in str(err.value)
    assert "\n" not in str(err.value)


def test_basic_auth_over_plain_http_is_refused_off_loopback():
    with pytest.raises(ProviderError, match="clear text"):
        PsrpSession("sync01.contoso.com", ssl=False, auth="basic", username=USER, password=PASSWORD)


def test_a_terminating_error_fails_the_pipeline(served):
    _lab, _endpoint, server = served()
    script = "$ErrorActionPreference = 'Stop'\nImport-Module ADSync\nGet-ADSyncRule -Identifier '11111111-2222-3333-4444-555555555555'"
    with pytest.raises(ProviderError) as err:
        server.session.invoke(script, "probe")
    assert str(err.value) == "entra-connect: probe: failed: Get-ADSyncRule: no synchronization rule with identifier 11111111-2222-3333-4444-555555555555 exists."


def test_a_non_terminating_error_is_caught_from_the_error_stream(served):
    _lab, endpoint, server = served()
    script = "Write-Error -Message 'the export step wrote a warning record'\n[pscustomobject]@{ Done = $true } | ConvertTo-Json -Compress"
    # pypsrp itself does not count it as an error (domain-facts C3)...
    from pypsrp.powershell import PowerShell

    ps = PowerShell(server.session._open())
    ps.add_script(script)
    output = ps.invoke()
    assert ps.had_errors is False and len(ps.streams.error) == 1 and output == ['{"Done":true}']
    # ...the provider does.
    with pytest.raises(ProviderError) as err:
        server.session.invoke(script, "probe")
    assert str(err.value) == "entra-connect: probe: reported an error: the export step wrote a warning record"


def test_powershell_outside_the_subset_is_an_error(served):
    _lab, _endpoint, server = served()
    for script, expected in (
        ("Get-Process", "does not simulate 'Get-Process' (a real command)"),
        ("Set-ADSyncRule -Identifier 'x'", "The term 'Set-ADSyncRule' is not recognized"),
        ('Set-ADSyncScheduler -SyncCycleEnabled "yes"', "does not support a string other than a single-quoted one"),
        ("Set-ADSyncScheduler -SyncCycleEnabled 'yes'", "Boolean parameters accept only Boolean values"),
        ("Set-ADSyncScheduler -Enabled $true", "A parameter cannot be found that matches parameter name 'Enabled'"),
        ("$x = $undefined", "The variable '$undefined' cannot be retrieved"),
        # PowerShell 7's chain operator: the grammar knows it, Windows PowerShell 5.1 does not.
        ("Set-ADSyncScheduler -SyncCycleEnabled $true && Get-ADSyncScheduler", "does not support this pipeline"),
        ("Remove-ADSyncRule -Identifier 'unterminated", "does not parse"),
    ):
        with pytest.raises(ProviderError) as err:
            server.session.invoke("Import-Module ADSync\n" + script, "probe")
        assert expected in str(err.value)


def test_output_cut_at_convertto_json_depth_is_detected(served):
    _lab, _endpoint, server = served()
    shallow = server.observe_script.replace(f"-Depth {scripts.JSON_DEPTH}", "-Depth 3")
    from providers.entraconnect import parse

    with pytest.raises(parse.Truncated, match="truncated at ConvertTo-Json's -Depth"):
        parse.server_state(server.session.invoke(shallow, "observe"))


def test_solution1_through_psrp_leaves_the_lab_as_in_process(served):
    reference = new_lab()
    lab, endpoint, server = served()
    operations = [op for op in solution1_operations(LabServer(reference).observe()) if not isinstance(op, RunSyncCycle)]
    # What plan --show-scripts shows: observe, then each step's script in plan order.
    server.observe()
    shown = [server.scripts_for(op) for op in operations]
    for op in operations:
        LabServer(reference).apply(op)
        server.apply(op)
        assert snapshot(lab) == snapshot(reference), op
    assert server.observe() == LabServer(reference).observe()
    # Each change ran the script shown for it, after a read of the scheduler and the rule ids
    # (and of the rule itself before an update), and then read back what it changed.
    prechecks = [scripts.precheck_rule(op.rule.identifier) if isinstance(op, UpdateRule) else scripts.PRECHECK for op in operations]
    read_backs = [scripts.READ_SCHEDULER if isinstance(op, SetScheduler) else scripts.read_rule(getattr(op, "identifier", None) or op.rule.identifier) for op in operations]
    expected = [script for check, text, back in zip(prechecks, shown, read_backs) for script in (check, text, back)]
    observation = [server.observe_script, scripts.read_threshold(AAD_USER)]
    assert endpoint.scripts == observation + expected + observation
    # The last step only moves the copy: its rule is read, its precedence set, and written back.
    assert shown[-2].splitlines()[2:] == [
        f"$syncRule = Get-ADSyncRule -Identifier '{operations[-2].rule.identifier}'",
        "$syncRule.Precedence = 108",
        "Add-ADSyncRule -SynchronizationRule $syncRule",
    ]


@pytest.mark.parametrize(
    "operation",
    [
        SetScheduler(False),
        SetContainerScope(("OU=Corp,DC=contoso,DC=com",), (SERVICE_OU,)),
        SetContainerScope(("OU=HybridUsers,OU=Corp,DC=contoso,DC=com", "OU=Servers,DC=contoso,DC=com"), ()),
        SetExcludedAttributes(("msExchMailboxGuid",)),
        SetExcludedAttributes(()),
        SetDeletionThreshold(None),
        SetDeletionThreshold(1500),
    ],
    ids=lambda op: type(op).__name__,
)
def test_each_configuration_operation_leaves_the_lab_as_in_process(served, operation):
    reference = new_lab()
    lab, _endpoint, server = served()
    try:
        LabServer(reference).apply(operation)
    except ProviderError as exc:
        expected = exc
    else:
        expected = None
    if expected is None:
        server.apply(operation)
    else:
        with pytest.raises(ProviderError):
            server.apply(operation)
    assert snapshot(lab) == snapshot(reference)


def test_a_missing_partition_fails_before_anything_changes(served):
    lab, _endpoint, server = served()
    before = snapshot(lab)
    with pytest.raises(ProviderError, match="the AD connector has no partition DC=fabrikam,DC=com \\(nothing was changed\\)"):
        server.apply(SetContainerScope(("OU=Corp,DC=fabrikam,DC=com",), ()))
    assert snapshot(lab) == before


def test_unknown_attribute_filter_is_refused(served):
    lab, endpoint, server = served()
    with pytest.raises(ProviderError, match="cannot filter employeeID"):
        server.apply(SetExcludedAttributes(("employeeID",)))
    assert endpoint.scripts == []


def _stepping_clock():
    counter = itertools.count()
    return lambda: float(next(counter))


def test_an_initial_cycle_through_psrp_ends_as_in_process(served):
    reference = new_lab()
    # One lab minute per lab session: the cycle finishes while the provider polls.
    lab, endpoint, server = served(speed=1.0, monotonic=_stepping_clock())
    for op in (SetScheduler(False), RunSyncCycle(SyncPolicy.INITIAL)):
        expected = LabServer(reference).apply(op)
        outcome = server.apply(op)
    assert outcome.detail.startswith("Initial cycle ") and outcome.detail.endswith("all runs succeeded")
    assert expected.detail.endswith("all runs succeeded")

    def essentials(lab):
        users = sorted((u.upn, u.mailbox_guid, u.immutable_id, u.usage_location, u.synced, u.deleted_at is None) for u in lab.cloud_users)
        runs = [(r.connector, r.profile, r.result) for r in lab.server.run_history]
        server = lab.server
        return users, runs, server.rules, server.connectors, server.next_policy, server.sync_cycle_enabled, server.cycle

    assert essentials(lab) == essentials(reference)
    assert endpoint.scripts.count(scripts.POLL_CYCLE) >= 2


def test_a_running_cycle_is_polled_to_its_end_in_real_time(served):
    # 20 lab minutes a second: the 6-minute Initial cycle takes about 0.3 s.
    lab, endpoint, server = served(speed=20.0, poll_interval=0.05)
    server.apply(SetScheduler(False))
    started = lab.clock
    outcome = server.apply(RunSyncCycle(SyncPolicy.INITIAL))
    assert "all runs succeeded" in outcome.detail
    assert lab.server.cycle is None and lab.clock > started
    assert endpoint.scripts.count(scripts.POLL_CYCLE) >= 2
    assert [r.profile for r in lab.server.run_history[-3:]] == ["Full Import", "Full Synchronization", "Export"]


def test_a_failed_run_stops_with_its_result_named(served):
    lab = new_lab()
    lab.set_scheduler(False)
    lab.set_deletion_threshold(2)
    lab.set_container_scope([SERVICE_OU], [])  # every hybrid user leaves the scope: many deletions
    lab, _endpoint, server = served(lab, speed=1.0, monotonic=_stepping_clock())
    with pytest.raises(ProviderError) as err:
        server.apply(RunSyncCycle(SyncPolicy.INITIAL))
    assert "Export ended 'stopped-deletion-threshold-exceeded'" in str(err.value)


def test_a_running_cycle_refuses_configuration_changes(served):
    lab = new_lab()
    lab.start_cycle(SyncPolicy.DELTA)
    lab, endpoint, server = served(lab)
    before = snapshot(lab)
    stock = next(r for r in lab.server.rules if r.name == "In from AD - User Exchange")
    with pytest.raises(RefusedError) as err:
        server.apply(SetRuleDisabled(stock.identifier, stock.name, True))
    assert "a sync cycle is in progress" in str(err.value) and "\n" not in str(err.value)
    assert snapshot(lab) == before
    assert set(endpoint.scripts) == {scripts.PRECHECK}
    # The scheduler switch is not a configuration change: pausing during a cycle is how a
    # change window starts (the running cycle goes on; apply waits for it), as in the lab.
    assert server.apply(SetScheduler(False)).detail == "read back: SyncCycleEnabled = False"
    assert not lab.server.sync_cycle_enabled and lab.server.cycle is not None


def test_a_staging_server_is_refused_unless_allowed(served):
    lab = new_lab()
    lab.server.staging_mode = True
    lab, endpoint, server = served(lab)
    before = snapshot(lab)
    with pytest.raises(RefusedError, match="staging mode") as err:
        server.apply(SetScheduler(False))
    assert "\n" not in str(err.value) and snapshot(lab) == before
    assert server.observe().scheduler.staging_mode is True

    lab2 = new_lab()
    lab2.server.staging_mode = True
    lab2, _endpoint, allowed = served(lab2, allow_staging=True)
    allowed.apply(SetScheduler(False))
    assert lab2.server.sync_cycle_enabled is False


def test_a_slow_script_is_answered_running_then_done(served, monkeypatch):
    monkeypatch.setattr(winrm_endpoint, "RECEIVE_WAIT_SECONDS", 0.01)
    lab, endpoint, server = served()
    real_run = winrm_endpoint.Interpreter.run

    def slow_run(self, script):
        import time

        time.sleep(0.3)
        return real_run(self, script)

    monkeypatch.setattr(winrm_endpoint.Interpreter, "run", slow_run)
    assert server.observe() == LabServer(lab).observe()
    assert endpoint.receive_states["Running"] >= 2 and endpoint.receive_states["Done"] >= 1


def test_open_server_takes_credentials_from_the_environment_only(monkeypatch):
    spec = EntraConnectTargetSpec(host="sync01.contoso.com", auth="ntlm")
    with pytest.raises(ProviderError, match="set SYNCPREP_WINRM_USERNAME"):
        open_server(spec, environ={}, interactive=False)
    env = {"SYNCPREP_WINRM_USERNAME": USER, "SYNCPREP_WINRM_PASSWORD": PASSWORD}
    server = open_server(spec, environ=env, interactive=False)
    assert server.session.where == "https://sync01.contoso.com:5986/wsman"
    assert server.session.cert_validation is True and server.session.auth == "ntlm"
    assert PASSWORD not in repr(server.session) and PASSWORD not in server.describe()
    # Kerberos can use the logged-on user's ticket: no password needed (with the kerberos extra,
    # which the tests do not install: a stand-in module takes its place for this check).
    monkeypatch.setitem(__import__("sys").modules, "gssapi", __import__("types").ModuleType("gssapi"))
    assert open_server(EntraConnectTargetSpec(host="sync01", auth="kerberos"), environ={}, interactive=False).session.username is None


def test_open_server_against_the_endpoint(served, monkeypatch):
    lab, endpoint, _server = served()
    address, port = endpoint.address
    spec = EntraConnectTargetSpec(host=address, port=port, ssl=False, auth="basic", cert_validation=False, aad_username=AAD_USER)
    server = open_server(spec, environ={"SYNCPREP_WINRM_USERNAME": USER, "SYNCPREP_WINRM_PASSWORD": PASSWORD}, interactive=False)
    try:
        assert server.aad_username == AAD_USER
        assert server.observe() == LabServer(lab).observe()
        assert f"Get-ADSyncExportDeletionThreshold -AADUserName '{AAD_USER}'" in endpoint.scripts[-1]
    finally:
        server.close()


def test_a_rule_change_with_a_clashing_precedence_is_refused_with_the_server_message(served):
    lab, _endpoint, server = served()
    observed = server.observe()
    copy = next(op for op in solution1_operations(observed) if type(op).__name__ == "CreateRule").rule
    clash = evolve(copy, precedence=108)
    from reconciler.operations import CreateRule

    before = snapshot(lab)
    with pytest.raises(ProviderError, match="Precedence is not unique"):
        server.apply(CreateRule(clash))
    assert snapshot(lab) == before


# ---------------------------------------------------------------------- join conditions


def _custom_rule_with_a_join(observed, **changes):
    ad = next(c for c in observed.connectors if c.kind == "AD")
    rule = SyncRule(
        identifier="5b0f3c55-1d2e-4c7a-9e61-0a7f4b2d9c10",
        name="In from AD - User Join by employee ID",
        direction=Direction.INBOUND,
        precedence=60,
        connector=ad.identifier,
        source_object_type="user",
        target_object_type="person",
        link_type=LinkType.JOIN,
        flows=(AttributeFlow("employeeID", FlowType.DIRECT, source="employeeID"),),
        scope=((ScopeCondition("employeeID", "ISNOTNULL"),),),
        join=(
            (JoinCondition("employeeID", "employeeID", True), JoinCondition("O'Neil-attr", "sourceAnchor")),
            (JoinCondition("mS-DS-ConsistencyGuid", "sourceAnchorBinary"),),
        ),
        description="joins on employeeID",
    )
    return evolve(rule, **changes)


def test_a_rules_join_groups_round_trip_through_create_observe_and_update(served):
    reference = new_lab()
    lab, endpoint, server = served()
    rule = _custom_rule_with_a_join(server.observe())
    create = CreateRule(rule)
    text = server.scripts_for(create)
    assert (
        "New-Object Microsoft.IdentityManagement.PowerShell.ObjectModel.JoinCondition -ArgumentList 'employeeID','employeeID',$true -OutVariable condition1\n"
        "New-Object Microsoft.IdentityManagement.PowerShell.ObjectModel.JoinCondition -ArgumentList 'O''Neil-attr','sourceAnchor',$false -OutVariable condition2\n"
        "Add-ADSyncJoinConditionGroup `\n    -SynchronizationRule $syncRule[0] `\n    -JoinConditions @($condition1[0], $condition2[0]) `\n    -OutVariable syncRule\n"
    ) in text
    assert text.index("Add-ADSyncScopeConditionGroup") < text.index("Add-ADSyncJoinConditionGroup") < text.index("Add-ADSyncRule")
    server.apply(create)
    LabServer(reference).apply(create)
    assert next(r for r in lab.server.rules if r.identifier == rule.identifier).join == rule.join
    assert server.observe().rule_by_id(rule.identifier) == rule
    assert snapshot(lab) == snapshot(reference)

    # A rewrite of the whole rule (a flow changes) carries the join back.
    rewritten = evolve(rule, flows=(AttributeFlow("employeeID", FlowType.EXPRESSION, source="employeeID", expression="Trim([employeeID])"),))
    assert "New-ADSyncRule" in server.scripts_for(UpdateRule(rewritten))
    server.apply(UpdateRule(rewritten))
    assert server.observe().rule_by_id(rule.identifier) == rewritten
    assert next(r for r in lab.server.rules if r.identifier == rule.identifier).join == rule.join


def test_disabling_a_stock_rule_with_a_join_keeps_its_join(served):
    lab = new_lab()
    stock = next(r for r in lab.server.rules if r.name == "In from AD - User Exchange")
    joined = evolve(stock, join=((JoinCondition("mS-DS-ConsistencyGuid", "sourceAnchorBinary"),), (JoinCondition("objectGUID", "sourceAnchorBinary"),)))
    lab.server.rules[lab.server.rules.index(stock)] = joined
    lab, _endpoint, server = served(lab)
    assert server.observe().rule_by_id(stock.identifier).join == joined.join
    # The lab refuses any change to a standard rule but its state: the join must come back as read.
    server.apply(SetRuleDisabled(stock.identifier, stock.name, True))
    assert next(r for r in lab.server.rules if r.identifier == stock.identifier) == evolve(joined, disabled=True)


def test_join_conditions_outside_the_export_form_are_refused(served):
    _lab, _endpoint, server = served()
    for arguments, expected in (
        ("'cs','mv'", "a JoinCondition takes three arguments"),
        ("'cs','mv','false'", "a JoinCondition takes three arguments"),
        ("'cs','',$false", "a JoinCondition takes three arguments"),
    ):
        script = f"New-Object Microsoft.IdentityManagement.PowerShell.ObjectModel.JoinCondition -ArgumentList {arguments}"
        with pytest.raises(ProviderError, match=expected):
            server.session.invoke(script, "probe", json_output=False)
    rule_id = next(r for r in server.observe().rules).identifier
    script = f"Import-Module ADSync\n$r = Get-ADSyncRule -Identifier '{rule_id}'\nAdd-ADSyncJoinConditionGroup -SynchronizationRule $r -JoinConditions @('mail')"
    with pytest.raises(ProviderError, match="-JoinConditions takes JoinCondition objects"):
        server.session.invoke(script, "probe", json_output=False)


# ---------------------------------------------------------------------- targeted updates


def test_a_precedence_or_state_change_edits_the_rule_in_place(served):
    reference = new_lab()
    lab, endpoint, server = served()
    rule = _custom_rule_with_a_join(server.observe())
    for lab_ in (reference,):
        LabServer(lab_).apply(CreateRule(rule))
    server.apply(CreateRule(rule))
    cases = [
        (evolve(rule, precedence=61), ["$syncRule.Precedence = 61"]),
        (evolve(rule, precedence=61, disabled=True), ["$syncRule.Disabled = $true"]),
        (evolve(rule, precedence=62, disabled=False), ["$syncRule.Precedence = 62", "$syncRule.Disabled = $false"]),
    ]
    for wanted, assignments in cases:
        shown = server.scripts_for(UpdateRule(wanted))
        assert shown.splitlines() == [
            "$ErrorActionPreference = 'Stop'",
            "Import-Module ADSync",
            f"$syncRule = Get-ADSyncRule -Identifier '{rule.identifier}'",
            *assignments,
            "Add-ADSyncRule -SynchronizationRule $syncRule",
        ]
        server.apply(UpdateRule(wanted))
        LabServer(reference).apply(UpdateRule(wanted))
        assert endpoint.scripts[-2] == shown
        assert snapshot(lab) == snapshot(reference)
    # Anything else rebuilds the rule.
    renamed = evolve(rule, precedence=63, description="another description")
    shown = server.scripts_for(UpdateRule(renamed))
    assert "New-ADSyncRule" in shown and "Add-ADSyncJoinConditionGroup" in shown
    server.apply(UpdateRule(renamed))
    assert endpoint.scripts[-2] == shown
    assert server.observe().rule_by_id(rule.identifier) == renamed


def test_an_update_decides_on_the_rule_as_read_just_before(served):
    lab, endpoint, server = served()
    rule = _custom_rule_with_a_join(server.observe())
    server.apply(CreateRule(rule))
    server.observe()
    moved = evolve(rule, precedence=64)
    assert "New-ADSyncRule" not in server.scripts_for(UpdateRule(moved))
    # Someone changes the rule's description between the plan and the apply: a targeted
    # edit would keep their description, so the whole rule is written.
    index = next(i for i, r in enumerate(lab.server.rules) if r.identifier == rule.identifier)
    lab.server.rules[index] = evolve(rule, description="edited by hand")
    server.apply(UpdateRule(moved))
    assert endpoint.scripts[-3] == scripts.precheck_rule(rule.identifier)
    assert endpoint.scripts[-2].splitlines()[2:4] == [f"$source = Get-ADSyncRule -Identifier '{rule.identifier}'", "New-ADSyncRule `"]
    assert lab.server.rules[index] == moved


def test_rule_properties_take_only_their_own_type(served):
    lab, _endpoint, server = served()
    rule_id = lab.server.rules[0].identifier
    before = snapshot(lab)
    for assignment, expected in (
        ("$r.Precedence = 'high'", 'Cannot convert value "high" to type "System.Int32"'),
        ("$r.Precedence = $true", 'Cannot convert value "True" to type "System.Int32"'),
        ("$r.Disabled = 1", 'Cannot convert value "1" to type "System.Boolean"'),
        ("$r.Identifier = '00000000-0000-0000-0000-000000000001'", "does not set the rule property 'Identifier'"),
    ):
        script = f"$ErrorActionPreference = 'Stop'\nImport-Module ADSync\n$r = Get-ADSyncRule -Identifier '{rule_id}'\n{assignment}\nAdd-ADSyncRule -SynchronizationRule $r"
        with pytest.raises(ProviderError, match=re.escape(expected)):
            server.session.invoke(script, "probe", json_output=False)
    assert snapshot(lab) == before


# ---------------------------------------------------------------------- the target's aad_username and certificate


def test_without_aad_username_the_threshold_is_unknown_and_cannot_be_set(served):
    lab, endpoint, server = served(aad_username=None)
    assert server.observe().deletion_threshold is None
    assert "ADSyncExportDeletionThreshold" not in endpoint.scripts[-1].replace("# No aad_username", "")
    before, ran = snapshot(lab), len(endpoint.scripts)
    for operation in (SetDeletionThreshold(1500), SetDeletionThreshold(None)):
        with pytest.raises(ProviderError) as err:
            server.apply(operation)
        message = str(err.value)
        assert message == (
            "entra-connect: export deletion threshold: set aad_username in [target.entra_connect]: "
            "the ADSyncExportDeletionThreshold cmdlets name an Entra ID account (nothing was changed)"
        )
        with pytest.raises(ProviderError, match="set aad_username"):
            server.scripts_for(operation)
    assert snapshot(lab) == before and len(endpoint.scripts) == ran


def test_the_threshold_cmdlets_name_the_aad_user(served):
    lab, endpoint, server = served()
    assert server.observe().deletion_threshold == 500
    server.apply(SetDeletionThreshold(1500))
    assert endpoint.scripts[-2].endswith(f"Enable-ADSyncExportDeletionThreshold -DeletionThreshold 1500 -AADUserName '{AAD_USER}'")
    assert lab.server.deletion_threshold == 1500
    server.apply(SetDeletionThreshold(None))
    assert endpoint.scripts[-2].endswith(f"Disable-ADSyncExportDeletionThreshold -AADUserName '{AAD_USER}'")
    assert lab.server.deletion_threshold is None
    # The lab's cmdlets, like the documented ones, need the account.
    with pytest.raises(ProviderError, match="missing mandatory parameters: AADUserName"):
        server.session.invoke("$ErrorActionPreference = 'Stop'\nImport-Module ADSync\nDisable-ADSyncExportDeletionThreshold", "probe", json_output=False)


def test_certificate_auth_takes_the_paths_from_the_spec(tmp_path):
    cert, key = tmp_path / "client.pem", tmp_path / "client.key"
    cert.write_text("-----BEGIN CERTIFICATE-----\n")
    key.write_text("-----BEGIN PRIVATE KEY-----\n")
    other = {"SYNCPREP_WINRM_CERTIFICATE_PEM": "/elsewhere/env.pem", "SYNCPREP_WINRM_CERTIFICATE_KEY_PEM": "/elsewhere/env.key"}
    spec = EntraConnectTargetSpec(host="sync01.contoso.com", auth="certificate", certificate_pem=str(cert), certificate_key_pem=str(key))
    server = open_server(spec, environ=other, interactive=False)
    assert server.session.auth_kwargs == {"certificate_pem": str(cert), "certificate_key_pem": str(key)}
    assert server.session.username is None

    # The variables are a fallback for a spec without paths.
    fallback = {"SYNCPREP_WINRM_CERTIFICATE_PEM": str(cert), "SYNCPREP_WINRM_CERTIFICATE_KEY_PEM": str(key)}
    server = open_server(EntraConnectTargetSpec(host="sync01", auth="certificate"), environ=fallback, interactive=False)
    assert server.session.auth_kwargs == {"certificate_pem": str(cert), "certificate_key_pem": str(key)}

    for bad, expected in (
        (dict(certificate_pem=str(cert)), "set certificate_key_pem in [target.entra_connect] too"),
        (dict(certificate_pem=str(cert), certificate_key_pem=str(tmp_path / "missing.key")), "certificate_key_pem '" + str(tmp_path / "missing.key") + "' is not a file"),
        ({}, "set certificate_pem and certificate_key_pem in [target.entra_connect]"),
    ):
        with pytest.raises(ProviderError) as err:
            open_server(EntraConnectTargetSpec(host="sync01", auth="certificate", **bad), environ={}, interactive=False)
        assert expected in str(err.value) and "\n" not in str(err.value)


def test_after_winrm_restarts_the_next_call_opens_a_new_pool(served):
    from reconciler.errors import TransientError

    lab, endpoint, server = served()
    server.apply(SetScheduler(False))
    address, port = endpoint.address
    endpoint.stop()  # WinRM restarts: every shell the client knew is gone
    restarted = WinRMEndpoint(endpoint.host, USER, PASSWORD, bind=address, port=port)
    restarted.start()
    try:
        try:
            server.apply(SetScheduler(True))
        except TransientError as exc:
            assert "\n" not in str(exc)
            server.apply(SetScheduler(True))  # the engine's retry, after observing again
        assert lab.server.sync_cycle_enabled is True
        assert any("Set-ADSyncScheduler -SyncCycleEnabled $true" in s for s in restarted.scripts)
    finally:
        restarted.stop()


def test_a_server_that_went_away_is_a_transient_error(served):
    from reconciler.errors import TransientError

    _lab, endpoint, server = served()
    server.observe()
    endpoint.stop()
    with pytest.raises(TransientError, match="cannot reach the server|no longer knows"):
        server.apply(SetScheduler(True))
    assert server.session._pool is None


def test_a_script_that_outlives_its_time_limit_is_stopped_and_its_outcome_unknown(served):
    import time

    lab, endpoint, server = served()
    server.observe()
    server.session.script_timeout = 1.0
    endpoint.script_delay = 4.0  # the server answers "Running" until then
    began = time.monotonic()
    with pytest.raises(ProviderError) as err:
        server.session.invoke(scripts.set_scheduler(False), "scheduler", json_output=False)
    assert time.monotonic() - began < 3.5
    assert str(err.value) == (
        "entra-connect: scheduler: the script did not finish within 1 s and was stopped; its outcome is unknown (observe again before retrying)"
    )
    assert endpoint.receive_states["Running"] >= 1
    # Stopped before it ran here; and the session goes on working.
    endpoint.script_delay = 0.0
    assert lab.server.sync_cycle_enabled is True
    server.apply(SetScheduler(False))
    assert lab.server.sync_cycle_enabled is False


def test_the_script_time_limit_is_an_option_of_the_server():
    session = PsrpSession("127.0.0.1", port=1, ssl=False, auth="basic", username="u", password="p")
    assert session.script_timeout == 15 * 60
    PsrpServer(session, script_timeout=30)
    assert session.script_timeout == 30
