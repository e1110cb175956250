"""The ``server`` state backend: the lock and journal on the Entra Connect server, through
the provider's own PowerShell session (here: the real PSRP client against the lab's
WinRM endpoint, whose interpreter does the file operations strictly)."""

import json
import socket

import pytest

from providers.entraconnect.statefiles import ServerState
from providers.lab import pwsh_interpreter, scenario
from providers.lab.host import LabHost
from reconciler.errors import ReconcilerError
from reconciler.journal import Journal, last_interrupted
from reconciler.state import LockedError

FOLDER = "C:\\ProgramData\\syncprep\\state"


@pytest.fixture
def two(served):
    """Two sessions (two machines, say) on one served lab: ``(lab, first, second)`` state backends."""
    from providers.entraconnect import PsrpServer, PsrpSession

    lab, endpoint, server = served(users=4)
    host, port = server.session.host, server.session.port
    other = PsrpServer(PsrpSession(host, port=port, ssl=False, auth="basic", username=server.session.username, password=server.session._password))
    yield lab, ServerState(server.session, "t1"), ServerState(other.session, "t1")
    other.close()


def test_the_folder_is_made_with_an_acl_of_its_own_and_read_back(two):
    lab, first, _second = two
    first.ensure()
    folder = lab.server.files[FOLDER.lower()]
    assert folder.directory and folder.protected
    assert folder.acl == ["CONTOSO\\syncadmin", "BUILTIN\\Administrators"]


def test_a_folder_whose_acl_lets_in_others_is_refused(two):
    from providers.lab.world import LabFile

    lab, first, _second = two
    lab.server.files["c:\\programdata\\syncprep"] = LabFile("C:\\ProgramData\\syncprep", directory=True)
    lab.server.files[FOLDER.lower()] = LabFile(FOLDER, directory=True, acl=["CONTOSO\\syncadmin", "BUILTIN\\Users"], protected=True)
    with pytest.raises(ReconcilerError, match=r"not syncprep's own \(its ACL also lets in BUILTIN\\Users\)"):
        first.ensure()


def test_of_two_sessions_exactly_one_holds_the_lock_and_the_holder_is_named(two):
    _lab, first, second = two
    with first.lock("apply a.toml") as held:
        held.record_plan("abc123")
        with pytest.raises(LockedError) as refused:
            second.lock("apply b.toml").__enter__()
        text = str(refused.value)
        assert f"another apply holds the lock: id {held.id}" in text and "plan abc123" in text
        assert f"{socket.gethostname()} pid" in text and f"syncprep force-unlock {held.id}" in text
        assert second.read_lock()["id"] == held.id
    assert second.read_lock() is None
    with second.lock("apply b.toml"):
        pass


def test_the_journal_is_appended_on_the_server_and_read_from_another_session(two):
    _lab, first, second = two
    with first.lock("apply"):
        journal = Journal(first)
        journal.start("sum", "apply", ["a", "b"])
        journal.step_started("a")
    run = last_interrupted(second)
    assert run is not None and run.step == "a" and run.killed


def test_an_apply_whose_lock_was_force_unlocked_cannot_write_its_journal(two):
    _lab, first, second = two
    with first.lock("apply") as held:
        Journal(first).start("sum", "apply", ["a"])
        assert second.force_unlock(held.id)["id"] == held.id
        with pytest.raises(ReconcilerError, match="no longer this apply's"):
            Journal(first).step_started("a")


def _dead_lock(lab, pid):
    from providers.lab.world import LabFile

    record = {"id": "dead0001", "pid": pid, "host": socket.gethostname(), "user": "x", "since": "2026-12-01T00:00:00Z", "command": "apply"}
    key = f"{FOLDER}\\t1.lock"
    lab.server.files[key.lower()] = LabFile(key, content=json.dumps(record, sort_keys=True))


def test_an_abandoned_lock_is_reported_and_only_resume_takes_it_over(two):
    lab, first, second = two
    first.ensure()
    _dead_lock(lab, 2**22 + 4242)
    with pytest.raises(LockedError, match="the lock is abandoned .*that process is gone.*never taken silently"):
        first.lock("apply").__enter__()
    with second.lock("apply --resume", take_over_dead=True) as taker:
        assert taker.taken_over["id"] == "dead0001"
        assert first.read_lock()["id"] == taker.id
        assert f"{FOLDER.lower()}\\t1.lock.dead-dead0001" in lab.server.files
        assert f"{FOLDER.lower()}\\t1.lock.takeover" not in lab.server.files
    assert first.read_lock() is None


# ---------------------------------------------------------------------- the lab's file system, strictly


class _Sink:
    def __init__(self):
        self.out, self.errors = [], []

    def output(self, item):
        self.out.append(item)

    def error(self, message):
        self.errors.append(message)


def _run(lab, script, identity="CONTOSO\\syncadmin"):
    sink = _Sink()
    pwsh_interpreter.Interpreter(LabHost(lab), sink, identity=identity).run(script)
    return sink


def test_new_item_refuses_a_file_that_exists_whatever_its_case():
    lab = scenario.build(users=4)
    _run(lab, "$null = New-Item -ItemType Directory -Path 'C:\\ProgramData\\s'\n$null = New-Item -ItemType File -Path 'C:\\ProgramData\\s\\a.lock' -Value 'x'")
    with pytest.raises(pwsh_interpreter.ScriptError, match="already exists"):
        _run(lab, "$ErrorActionPreference = 'Stop'\n$null = New-Item -ItemType File -Path 'C:\\PROGRAMDATA\\S\\A.LOCK' -Value 'y'")
    assert lab.server.files["c:\\programdata\\s\\a.lock"].content == "x"


def test_without_stop_a_missing_file_is_a_non_terminating_error():
    lab = scenario.build(users=4)
    sink = _run(lab, "$x = Get-Content -LiteralPath 'C:\\ProgramData\\nothing.txt' -Raw\n'after'")
    assert sink.errors == ["Cannot find path 'C:\\ProgramData\\nothing.txt' because it does not exist."] and sink.out == ["after"]
    with pytest.raises(pwsh_interpreter.ScriptError, match="Cannot find path"):
        _run(lab, "$ErrorActionPreference = 'Stop'\nRemove-Item -LiteralPath 'C:\\ProgramData\\nothing.txt'")


def test_a_file_needs_its_folder_and_wildcards_need_literal_path():
    lab = scenario.build(users=4)
    with pytest.raises(pwsh_interpreter.ScriptError, match="Could not find a part of the path"):
        _run(lab, "$ErrorActionPreference = 'Stop'\nAdd-Content -LiteralPath 'C:\\ProgramData\\no\\j.txt' -Value 'x'")
    with pytest.raises(pwsh_interpreter.ScriptError, match="wildcard"):
        _run(lab, "Set-Content -Path 'C:\\ProgramData\\a[1].txt' -Value 'x'")


def test_a_folder_whose_acl_leaves_the_account_out_denies_it():
    lab = scenario.build(users=4)
    script = (
        "$ErrorActionPreference = 'Stop'\n$null = New-Item -ItemType Directory -Path 'C:\\ProgramData\\p'\n"
        "$acl = New-Object -TypeName System.Security.AccessControl.DirectorySecurity\n$acl.SetAccessRuleProtection($true, $false)\n"
        "$acl.AddAccessRule((New-Object -TypeName System.Security.AccessControl.FileSystemAccessRule -ArgumentList 'CONTOSO\\someone', 'FullControl', 'ContainerInherit, ObjectInherit', 'None', 'Allow'))\n"
        "Set-Acl -LiteralPath 'C:\\ProgramData\\p' -AclObject $acl"
    )
    _run(lab, script)
    with pytest.raises(pwsh_interpreter.ScriptError, match="Access to the path .* is denied"):
        _run(lab, "$ErrorActionPreference = 'Stop'\nAdd-Content -LiteralPath 'C:\\ProgramData\\p\\j.txt' -Value 'x'")
    assert _run(lab, "Test-Path -LiteralPath 'C:\\ProgramData\\p\\j.txt'").out == [False]
    with pytest.raises(pwsh_interpreter.ScriptError, match="FileSystemRights"):
        _run(lab, "$r = New-Object -TypeName System.Security.AccessControl.FileSystemAccessRule -ArgumentList 'a', 'AllOfIt', 'None', 'None', 'Allow'")


def test_an_acl_with_a_deny_rule_is_refused_not_half_obeyed():
    """Windows lets a Deny rule win; the lab, which models Allow rules only, must not let the account in."""
    lab = scenario.build(users=4)
    script = (
        "$ErrorActionPreference = 'Stop'\n$null = New-Item -ItemType Directory -Path 'C:\\ProgramData\\p'\n"
        "$acl = New-Object -TypeName System.Security.AccessControl.DirectorySecurity\n"
        "$acl.AddAccessRule((New-Object -TypeName System.Security.AccessControl.FileSystemAccessRule -ArgumentList 'BUILTIN\\Administrators', 'FullControl', 'ContainerInherit, ObjectInherit', 'None', 'Allow'))\n"
        "$acl.AddAccessRule((New-Object -TypeName System.Security.AccessControl.FileSystemAccessRule -ArgumentList 'BUILTIN\\Administrators', 'FullControl', 'ContainerInherit, ObjectInherit', 'None', 'Deny'))\n"
        "Set-Acl -LiteralPath 'C:\\ProgramData\\p' -AclObject $acl"
    )
    with pytest.raises(pwsh_interpreter.ScriptError, match="does not simulate Deny rules"):
        _run(lab, script)
