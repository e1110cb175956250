"""The wait for a sync cycle, against a scripted server (domain-facts A7).

The server goes idle between run steps, so neither an empty run status nor a
connector's first run of the cycle means the cycle is done.
"""

import pytest

from providers.entraconnect import PsrpServer
from reconciler.errors import ProviderError
from reconciler.model import SyncPolicy
from reconciler.operations import RunSyncCycle

AD, AAD = "contoso.com", "contoso.onmicrosoft.com - AAD"
CONNECTORS = [{"Name": AD, "Type": "AD"}, {"Name": AAD, "Type": "Extensible2"}]
IDLE = {"SyncCycleInProgress": False, "StagingModeEnabled": False, "RuleIdentifiers": []}


def run(connector, number, profile, result="success", ended=True):
    return {
        "Connector": connector,
        "RunNumber": number,
        "Profile": profile,
        "Result": result,
        "StartDate": "/Date(1790000000000)/",
        "EndDate": "/Date(1790000060000)/" if ended else None,
    }


# Before the cycle: a whole earlier cycle, up to the watermarks (AD 5, AAD 7).
OLD = [run(AD, 5, "Full Synchronization"), run(AD, 4, "Full Import"), run(AAD, 7, "Export"), run(AAD, 6, "Full Import")]


def poll(in_progress, busy, *runs):
    answer = {"RunStatus": [{"Connector": AD, "RunState": "Busy"}] if busy else [], "Connectors": CONNECTORS, "Runs": list(runs) + OLD}
    if in_progress is not None:
        answer["SyncCycleInProgress"] = in_progress
    return answer


class ScriptedSession:
    def __init__(self, polls):
        self.polls = list(polls)
        self.polled = 0

    def invoke(self, script, resource="script", json_output=True):
        if "Start-ADSyncSyncCycle" in script:
            return {"Started": "2026-09-21T10:00:00.0000000+02:00", "Watermarks": [{"Connector": AD, "RunNumber": 5}, {"Connector": AAD, "RunNumber": 7}], "Result": "Success", "Refused": None}
        if "Get-ADSyncConnectorRunStatus" in script:
            self.polled += 1
            if not self.polls:
                raise AssertionError("polled after the cycle was done")
            return self.polls.pop(0)
        return dict(IDLE)

    def close(self):
        pass


def server(session, timeout=100.0):
    clock = iter(range(10_000))
    return PsrpServer(session, poll_interval=1, cycle_timeout=timeout, clock=lambda: next(clock), sleep=lambda s: None)


def test_an_initial_cycle_idle_between_steps_is_not_done_after_the_imports():
    imports = (run(AD, 6, "Full Import"), run(AAD, 8, "Full Import"))
    done = (run(AD, 7, "Full Synchronization"), run(AAD, 9, "Export"))
    session = ScriptedSession(
        [
            poll(True, True, imports[0]),
            poll(False, False, *imports),  # idle between steps: only the imports have run
            poll(False, False, *imports),
            poll(None, False, *imports, *done),  # no flag: not idle
            poll(False, True, *imports, *done),  # busy again
            poll(False, False, *imports, *done),
            poll(False, False, *imports, *done),
        ]
    )
    outcome = server(session).apply(RunSyncCycle(SyncPolicy.INITIAL))
    assert session.polled == 7 and not session.polls
    assert outcome.detail.startswith("Initial cycle 2026-09-21T08:00:00Z to ") and outcome.detail.endswith("all runs succeeded")


def test_a_delta_cycle_waits_for_the_delta_synchronization_and_the_export():
    delta = (run(AD, 6, "Delta Import"), run(AD, 7, "Delta Synchronization"), run(AAD, 8, "Delta Import"))
    session = ScriptedSession([poll(False, False, *delta)] * 5)
    with pytest.raises(ProviderError) as err:
        server(session, timeout=4).apply(RunSyncCycle(SyncPolicy.DELTA))
    assert f"waiting for {AAD} (Export)" in str(err.value)


def test_runs_at_or_below_the_watermark_are_not_this_cycles():
    # Only the earlier cycle's runs: whatever the flags say, this cycle has not run.
    session = ScriptedSession([poll(False, False)] * 5)
    with pytest.raises(ProviderError) as err:
        server(session, timeout=4).apply(RunSyncCycle(SyncPolicy.INITIAL))
    assert "not finished" in str(err.value) and f"{AD} (Full Synchronization)" in str(err.value)


def test_a_failed_step_ends_the_wait_once_the_server_is_idle():
    session = ScriptedSession([poll(False, False, run(AD, 6, "Full Import", "stopped-server-down"))] * 2)
    with pytest.raises(ProviderError) as err:
        server(session).apply(RunSyncCycle(SyncPolicy.INITIAL))
    assert f"{AD} Full Import ended 'stopped-server-down'" in str(err.value)


def test_a_cycle_with_no_runs_to_report_does_not_crash():
    # A server without connectors: nothing to wait for, and no run to take the end from.
    empty = {"SyncCycleInProgress": False, "RunStatus": [], "Connectors": [], "Runs": []}
    session = ScriptedSession([empty, empty])
    outcome = server(session).apply(RunSyncCycle(SyncPolicy.DELTA))
    assert outcome.detail == "Delta cycle 2026-09-21T08:00:00Z: all runs succeeded"


def test_the_parse_helpers_the_server_uses_are_public():
    from providers.entraconnect import parse

    assert parse.list_of(None, "x") == [] and parse.list_of({"a": 1}, "x") == [{"a": 1}]
    assert parse.obj_of({"a": 1}, "x") == {"a": 1}
    with pytest.raises(parse.Truncated):
        parse.obj_of("@{a=1}", "x")
