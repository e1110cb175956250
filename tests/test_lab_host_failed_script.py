"""A served script that changes the lab and then fails still has its change saved (review 5, F1).

Every lab cmdlet's error ends the script (ScriptError), so a script that changed the lab and
then failed left the session by an exception; the save after the session's body was skipped,
and since reads no longer save, the change the clients were served was lost at close (or on a
crash). The session saves on every exit of its body (an error, KeyboardInterrupt,
GeneratorExit) when something changed, and still never when nothing changed.
"""

import os

import pytest

from providers.lab import scenario, store
from providers.lab.host import LabHost
from providers.lab.pwsh_interpreter import Interpreter, ScriptError

UNKNOWN_RULE = "00000000-0000-0000-0000-000000000001"


class _Sink:
    def output(self, item):
        pass

    def error(self, message, error_id=None):
        pass


def _host(tmp_path):
    path = tmp_path / "lab.json"
    store.save(scenario.build("default", users=6), path)
    store.compact(path)
    return LabHost.open(path), path


def _run(host, script):
    Interpreter(host, _Sink(), identity="CONTOSO\\syncadmin").run("Import-Module ADSync\n" + script)


def _disk(path):
    stat = os.stat(path)
    return stat.st_ino, stat.st_mtime_ns, stat.st_size, path.read_bytes(), store.changes_path(path).exists()


def test_a_change_made_by_a_script_that_then_fails_is_on_disk_after_reads_and_close(tmp_path):
    host, path = _host(tmp_path)
    assert host.lab.server.sync_cycle_enabled
    with pytest.raises(ScriptError, match="no synchronization rule"):
        _run(host, f"Set-ADSyncScheduler -SyncCycleEnabled $false\nGet-ADSyncRule -Identifier '{UNKNOWN_RULE}'")
    assert host.lab.server.sync_cycle_enabled is False  # what the clients are served
    assert store.load(path).server.sync_cycle_enabled is False  # saved before the lock was released
    _run(host, "Get-ADSyncScheduler")  # a read: does not save
    host.close()
    assert store.load(path).server.sync_cycle_enabled is False


def test_a_script_that_fails_without_changing_anything_leaves_the_file_alone(tmp_path):
    host, path = _host(tmp_path)
    before = _disk(path)
    with pytest.raises(ScriptError):
        _run(host, f"Get-ADSyncScheduler\nGet-ADSyncRule -Identifier '{UNKNOWN_RULE}'")
    assert _disk(path) == before


@pytest.mark.parametrize("stop", [KeyboardInterrupt, GeneratorExit, RuntimeError])
def test_every_exit_of_a_session_saves_what_changed_and_re_raises(tmp_path, stop):
    host, path = _host(tmp_path)
    with pytest.raises(stop):
        with host.session(writes=lambda: True) as lab:
            lab.server.sync_cycle_enabled = False
            raise stop()
    assert store.load(path).server.sync_cycle_enabled is False


@pytest.mark.parametrize("stop", [KeyboardInterrupt, GeneratorExit, RuntimeError])
@pytest.mark.parametrize("writes", [False, lambda: False])
def test_no_exit_of_a_session_that_changed_nothing_touches_the_file(tmp_path, stop, writes):
    host, path = _host(tmp_path)
    before = _disk(path)
    with pytest.raises(stop):
        with host.session(writes=writes):
            raise stop()
    assert _disk(path) == before
