"""Review 3's findings, each reproduced before its fix (see /work/helpers/review-3.md)."""

import errno
import io
import json
import os
import re
import signal
import socket
import sys
from pathlib import Path

import pytest

from providers.lab import scenario, store
from reconciler.cli.command import main

EXAMPLE = str(Path(__file__).resolve().parents[1] / "desired-state" / "example.toml")


@pytest.fixture
def lab(tmp_path):
    path = tmp_path / "lab.json"
    store.save(scenario.build("default", users=20), path)
    return path


# ---------------------------------------------------------------- 3. minute counters out of range


@pytest.mark.parametrize(
    "old,new,where",
    [
        (b'"clock":', b'"clock":99999999999999999999999999999', "$.lab.clock"),
        (b'"clock":', b'"clock":-999999999999', "$.lab.clock"),
        (b'"clock":', b'"clock":-1', "$.lab.clock"),
        (b'"next_scheduled_at":', b'"next_scheduled_at":9999999999999', "$.lab.server.next_scheduled_at"),
        (b'"sync_interval":', b'"sync_interval":-30', "$.lab.server.sync_interval"),
        (b'"changed_at":', b'"changed_at":99999999999999', "$.lab.ad_users[0].changed_at"),  # a user's line
        (b'"cycle":null', b'"cycle":{"policy":"Delta","started_at":1,"ends_at":99999999999999}', "server.cycle.ends_at"),
    ],
)
def test_a_minute_counter_out_of_range_is_refused_in_one_line_at_its_key_path(lab, capsys, old, new, where):
    pattern = re.escape(old) + (rb"-?\d+" if old.endswith(b":") else b"")  # a key's number, or a literal
    data, count = re.subn(pattern, lambda _match: new, lab.read_bytes(), count=1)
    assert count == 1
    lab.write_bytes(data)
    for argv in (["lab", "show", "--lab", str(lab)], ["plan", EXAMPLE, "--lab", str(lab)]):
        code = main(["--no-color", *argv])
        err = capsys.readouterr().err
        assert code != 0 and "Traceback" not in err, err
        assert err.count("\n") == 1 and "corrupt lab file" in err and where in err, err


def test_a_running_cycle_with_minutes_in_range_still_loads(lab):
    data = lab.read_bytes().replace(b'"cycle":null', b'"cycle":{"policy":"Delta","started_at":1,"ends_at":5}', 1)
    lab.write_bytes(data)
    assert store.load(lab).server.cycle.ends_at == 5


# ---------------------------------------------------------------- 1. sync --resume and a dead apply's lock


def _apply_killed_at_its_prompt(tmp_path):
    """An apply that dies at its approval prompt (terminal closed, kill -9): its lock, no journal run."""
    from reconciler.cli import apply as apply_cli

    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            os.chdir(tmp_path)
            apply_cli._confirm = lambda out, plan: os._exit(137)
            main(["--no-color", "apply", EXAMPLE, "--lab", str(tmp_path / "lab.json")])
        finally:
            os._exit(1)
    _pid, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 137
    (lock,) = tmp_path.glob("*.lock")
    assert json.loads(lock.read_text())["command"].startswith("apply ")
    return lock


def _refused_and_untouched(cli, tmp_path, lock):
    held, before = lock.read_bytes(), (tmp_path / "lab.json").read_bytes()
    code, out, err = cli("sync", EXAMPLE, "--lab", tmp_path / "lab.json", "--resume")
    assert code == 1 and "took over" not in err + out, err
    assert "the lock is abandoned" in err and "'syncprep apply --resume' takes over" in err and "force-unlock" in err, err
    assert lock.read_bytes() == held and not list(tmp_path.glob("*.dead-*")), "the apply's lock is left as it was"
    assert (tmp_path / "lab.json").read_bytes() == before, "no cycle was started"


def test_sync_resume_refuses_the_lock_of_an_apply_killed_before_its_journal_run(tmp_path, cli, lab):
    lock = _apply_killed_at_its_prompt(tmp_path)
    _refused_and_untouched(cli, tmp_path, lock)
    code, _out, err = cli("apply", EXAMPLE, "--lab", tmp_path / "lab.json", "--resume", "--auto-approve")
    assert code == 0 and "took over the lock" in err, err  # apply --resume still takes it over
    assert not list(tmp_path.glob("*.lock"))


def test_sync_resume_after_a_killed_sync_refuses_the_lock_of_an_apply_killed_since(tmp_path, cli, lab):
    from test_faults import harness

    assert harness(tmp_path, "boundary:1", "sync", EXAMPLE).returncode == -9
    # An apply then carries on (the sync's dead lock released, as force-unlock would) and dies at its prompt.
    next(tmp_path.glob("*.lock")).unlink()
    lock = _apply_killed_at_its_prompt(tmp_path)
    _refused_and_untouched(cli, tmp_path, lock)


def test_the_server_backend_s_sync_resume_takes_over_a_dead_sync_s_lock_only(served):
    from providers.entraconnect import PsrpServer, PsrpSession
    from providers.entraconnect.statefiles import ServerState
    from providers.lab.world import LabFile
    from reconciler.state import LockedError

    lab, _endpoint, server = served(users=4)
    state = ServerState(server.session, "t1")
    state.ensure()
    folder = "C:\\ProgramData\\syncprep\\state"

    def dead(command):
        record = {"id": "dead0001", "pid": 2**22 + 4242, "host": socket.gethostname(), "user": "x", "since": "2026-12-01T00:00:00Z", "command": command}
        key = f"{folder}\\t1.lock"
        lab.server.files[key.lower()] = LabFile(key, content=json.dumps(record, sort_keys=True))

    dead("apply desired.toml")
    with pytest.raises(LockedError, match="abandoned .*'syncprep apply --resume' takes over"):
        state.lock("sync desired.toml", take_over_dead="sync").__enter__()
    assert state.read_lock()["id"] == "dead0001"
    dead("sync desired.toml")
    with state.lock("sync desired.toml", take_over_dead="sync") as taker:
        assert taker.taken_over["id"] == "dead0001"
    assert state.read_lock() is None


# ---------------------------------------------------------------- 1b. SIGHUP: the terminal closed


@pytest.fixture
def sighup_restored():
    """SIGHUP's handler put back after the test; meanwhile one that cannot end the test run."""
    previous = signal.signal(signal.SIGHUP, lambda _signum, _frame: None)
    yield
    signal.signal(signal.SIGHUP, previous)


def test_a_hang_up_stops_a_command_as_ctrl_c_does_and_a_second_one_is_ignored(sighup_restored):
    from reconciler.interrupts import deferred, stop_signals

    with pytest.raises(KeyboardInterrupt):
        with stop_signals(platform="linux"):
            os.kill(os.getpid(), signal.SIGHUP)
    assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN, "the terminal is gone: no later hang-up kills the clean-up"


def test_a_hang_up_inside_the_restore_is_raised_after_it_and_the_next_one_does_not_insist(sighup_restored):
    from reconciler.interrupts import deferred, stop_signals

    restored = []
    with pytest.raises(KeyboardInterrupt):
        with stop_signals(platform="linux"), deferred(platform="linux"):
            os.kill(os.getpid(), signal.SIGHUP)  # the kernel's hang-up, then the shell's
            os.kill(os.getpid(), signal.SIGHUP)
            restored.append("scheduler resumed")
    assert restored == ["scheduler resumed"]


def test_under_nohup_a_hang_up_stays_ignored(sighup_restored):
    from reconciler.interrupts import deferred, stop_signals

    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    with stop_signals(platform="linux"), deferred(platform="linux"):
        os.kill(os.getpid(), signal.SIGHUP)
    assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN


def test_an_apply_whose_terminal_closes_at_the_approval_prompt_releases_its_lock(tmp_path, lab):
    from reconciler.cli import apply as apply_cli

    def hang_up(out, plan):
        os.kill(os.getpid(), signal.SIGHUP)  # the terminal closed while the prompt waited
        return True

    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            os.chdir(tmp_path)
            apply_cli._confirm = hang_up
            code = main(["--no-color", "apply", EXAMPLE, "--lab", str(lab)])
        finally:
            os._exit(code)
    _pid, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 130, "stopped as Ctrl-C stops it, not killed by the signal"
    assert not list(tmp_path.glob("*.lock")), "the lock is released"


# ---------------------------------------------------------------- 2. extra= fields of a log record


def test_extra_fields_reach_no_handler_unscrubbed_also_one_added_later(monkeypatch):
    import io
    import logging

    from reconciler.cli import logs

    monkeypatch.setenv("SYNCPREP_WINRM_PASSWORD", "Sup3rSecretPw")
    logs.configure(logging.DEBUG)
    log = logging.getLogger("pypsrp.wsman")
    shown = io.StringIO()
    handler = logging.StreamHandler(shown)
    handler.setFormatter(logging.Formatter("LATE %(message)s auth=%(auth)s headers=%(headers)s n=%(n)s"))
    log.addHandler(handler)
    try:
        log.debug("request sent", extra={"auth": "password=Sup3rSecretPw", "headers": {"Authorization": "Bearer abc.def.ghi"}, "n": 3})
    finally:
        log.removeHandler(handler)
    text = shown.getvalue()
    assert "Sup3rSecretPw" not in text and "abc.def.ghi" not in text, text
    assert "LATE request sent auth=password=*** headers={'Authorization': '***'} n=3" in text, text
    # A record made another way (a queue's or a socket's peer: makeLogRecord, which calls the
    # factory with no name first) meets the Redact filter.
    made = logging.makeLogRecord({"name": "x", "msg": "m", "levelname": "DEBUG", "auth": "Sup3rSecretPw"})
    assert logs.Redact().filter(made) and made.auth == "***"
    # An object whose text shows no credential is left as it is (rich's handler wants its highlighter).
    highlighter = object()
    made = logging.makeLogRecord({"name": "x", "msg": "m", "highlighter": highlighter, "markup": True})
    assert logs.Redact().filter(made) and made.highlighter is highlighter and made.markup is True


# ---------------------------------------------------------------- 4. the WinRM user and password swapped


def test_a_password_in_the_user_variable_is_not_echoed_when_authentication_fails(served):
    from providers.entraconnect import PsrpServer, PsrpSession
    from reconciler.errors import ProviderError
    from reconciler.operations import SetScheduler

    _lab, endpoint, server = served(users=4)
    user, password = server.session.username, server.session._password
    cases = [
        (password, user, "the WinRM user (not shown: the user name and the password look swapped)"),
        ("Winter2024", "wrong", "the WinRM user (not shown: written neither DOMAIN\\user nor user@domain"),
        (user, "wrong", f"authentication failed for user {user!r} with basic"),  # an account's name is still shown
    ]
    for username, given, said in cases:
        session = PsrpSession(*endpoint.address, ssl=False, auth="basic", username=username, password=given)
        with pytest.raises(ProviderError) as err:
            PsrpServer(session).apply(SetScheduler(False))
        message = str(err.value)
        assert said in message and "authentication failed" in message, message
        assert password not in message and "Winter2024" not in message and password not in repr(session), message


# ---------------------------------------------------------------- 5. output gone (a closed pipe, a hung-up terminal)


def _apply_interrupted_at_resume_with_output_gone(tmp_path, make_output_fail):
    """apply (a raised threshold, the scheduler paused) interrupted while step "Resume the sync
    scheduler" waits, its output gone meanwhile: the brackets' notes cannot be written."""
    from providers.lab import provider
    from reconciler.operations import SetScheduler

    lab_path = tmp_path / "lab.json"
    lab = scenario.build(users=20)
    lab.set_deletion_threshold(10)
    store.save(lab, lab_path)
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code, interrupted = 99, []
        try:
            os.chdir(tmp_path)
            applied = provider.LabServer.apply

            def apply(self, operation):
                if isinstance(operation, SetScheduler) and operation.enabled and not interrupted:
                    interrupted.append(operation)
                    make_output_fail()
                    raise KeyboardInterrupt  # Ctrl-C: the whole pipeline's, tee's too
                return applied(self, operation)

            provider.LabServer.apply = apply
            rebuild = str(Path(EXAMPLE).with_name("rebuild.toml"))
            flags = ["--auto-approve", "--approve-irreversible", "--approve-threshold-raise", "--force"]
            code = main(["--no-color", "apply", rebuild, "--lab", str(lab_path), *flags])
        except BaseException:  # noqa: BLE001 - what escapes is the finding; the parent looks at the lab
            code = 98
        finally:
            os._exit(code if interrupted else 97)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) != 97, "the apply was never interrupted: the test proved nothing"
    return store.load(lab_path)


def _closed_pipe():
    """``syncprep apply ... 2>&1 | tee apply.log``, tee gone."""
    read, write = os.pipe()
    os.close(read)
    os.dup2(write, 1)
    os.dup2(write, 2)
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115 - the child's own, to its end
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115


class _HungUp(io.TextIOBase):
    """A terminal that hung up: every write fails with EIO."""

    def write(self, _text):
        raise OSError(errno.EIO, "Input/output error")

    def flush(self):
        raise OSError(errno.EIO, "Input/output error")


def _hung_up_terminal():
    sys.stdout = sys.stderr = _HungUp()


@pytest.mark.parametrize("gone", [_closed_pipe, _hung_up_terminal], ids=["pipe-closed", "terminal-hung-up"])
def test_the_brackets_put_everything_back_when_the_output_is_gone(tmp_path, gone):
    lab = _apply_interrupted_at_resume_with_output_gone(tmp_path, gone)
    assert lab.server.sync_cycle_enabled, "the scheduler is resumed"
    assert lab.server.deletion_threshold == 10, "the threshold is put back"
    (journal,) = tmp_path.glob("*.journal")
    from reconciler.journal import last_interrupted

    assert last_interrupted(journal) is None or not last_interrupted(journal).scheduler_paused


# ---------------------------------------------------------------- 6. lab advance with a huge N


@pytest.mark.parametrize("minutes,said", [("999999999999", "at most 527040 minutes (a year) at a time"), ("-1", "must not be negative")])
@pytest.mark.parametrize("scheduler", ["resume", "pause"])
def test_lab_advance_by_more_than_the_lab_can_take_is_one_line_and_changes_nothing(lab, capsys, minutes, said, scheduler):
    assert main(["lab", "scheduler", scheduler, "--lab", str(lab)]) == 0
    capsys.readouterr()
    before = lab.read_bytes()
    assert main(["--no-color", "lab", "advance", minutes, "--lab", str(lab)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and said in err and "Traceback" not in err, err
    assert lab.read_bytes() == before


def test_lab_advance_goes_no_further_than_a_lab_file_holds(lab, capsys):
    from providers.lab.store_decode import LAST_MINUTE

    near = store.load(lab)
    near.clock = LAST_MINUTE - 10
    near.server.sync_cycle_enabled = False
    store.save(near, lab)
    assert main(["--no-color", "lab", "advance", "11", "--lab", str(lab)]) == 1
    assert "goes no further than 10 minutes from now" in capsys.readouterr().err
    assert main(["--no-color", "lab", "advance", "10", "--lab", str(lab)]) == 0
    assert store.load(lab).clock == LAST_MINUTE, "and the lab file it writes is read back"
