"""Run ``syncprep`` with a fault: killed with SIGKILL at a step boundary or inside a step.

Usage: python harness.py OPLOG KILL -- syncprep-args...

KILL is ``none``, ``boundary:N`` (after the N-th step is journalled done),
``before:N`` (as the N-th provider call starts: nothing of it done) or
``inside:N`` (inside the N-th provider call: its effect is saved, the engine has
not recorded it). Every provider write is appended to OPLOG (one JSON line,
fsynced) so the test can prove that nothing was done twice across the kill.

:func:`run_forked` does the same in a child forked from the test process, which
has imported syncprep already (issue 19: a new interpreter per run cost the fault
suite most of its time). The child is a process of its own, killed with SIGKILL
as the script is; it starts from a lab store that remembers no file, as a new
process does.
"""

import contextlib
import functools
import importlib
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time


def install(oplog_path, kill):
    """Wraps the providers and the journal of this process to log and to die as ``kill`` says."""
    from providers.lab import provider as lab_provider
    from reconciler import journal

    mode, _, number = kill.partition(":")
    number = int(number or 0)
    calls = {"provider": 0, "boundary": 0}

    def record(operation):
        entry = {"op": type(operation).__name__}
        users = getattr(operation, "users", None)
        if users is not None:
            entry["users"] = [u.upn for u in users]
        with open(oplog_path, "a") as fh:
            fh.write(json.dumps(entry) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def wrap(cls):
        original = cls.apply

        def apply(self, operation):
            if mode == "before" and calls["provider"] + 1 == number:
                # Journalled as started, not carried out (on a real server the cycle may be running).
                os.kill(os.getpid(), signal.SIGKILL)
            outcome = original(self, operation)
            record(operation)
            calls["provider"] += 1
            if mode == "inside" and calls["provider"] == number:
                # The effect happened and is saved (a served lab saves by itself); the engine never hears of it.
                if hasattr(self, "lab"):
                    lab_provider.store.save(self.lab, os.environ["SYNCPREP_FAULT_LAB"])
                os.kill(os.getpid(), signal.SIGKILL)
            return outcome

        cls.apply = apply

    # SYNCPREP_FAULT_CLASSES="module:Class,..." picks the providers to wrap (default: the lab's).
    for spec in os.environ.get("SYNCPREP_FAULT_CLASSES", "providers.lab.provider:LabServer,providers.lab.provider:LabTenant").split(","):
        module, _, name = spec.partition(":")
        wrap(getattr(importlib.import_module(module), name))

    original_ended = journal.Journal.step_ended

    def step_ended(self, step_id, status, detail="", *args, **kwargs):
        original_ended(self, step_id, status, detail, *args, **kwargs)
        calls["boundary"] += 1
        if mode == "boundary" and calls["boundary"] == number:
            os.kill(os.getpid(), signal.SIGKILL)

    journal.Journal.step_ended = step_ended


def run(oplog_path, kill, args):
    """``syncprep ARGS`` with the faults installed; with no ``oplog_path``, plain ``syncprep ARGS``."""
    from reconciler.cli.command import main

    if oplog_path is not None:
        install(oplog_path, kill)
    return main(args)


def licence_changes(oplog_path):
    """How often each (AssignLicense|RemoveLicense, UPN) was sent, from the operation log: a
    resumed run must change no licence twice (other steps, such as the scheduler off and on,
    repeat by design)."""
    counted = {}
    for line in open(oplog_path, encoding="utf-8").read().splitlines():
        entry = json.loads(line)
        if entry["op"] in ("AssignLicense", "RemoveLicense"):
            for upn in entry["users"]:
                counted[(entry["op"], upn)] = counted.get((entry["op"], upn), 0) + 1
    return counted


def _exit_status(code, stderr):
    """The status ``sys.exit(code)`` gives a process, as the ``syncprep`` script ends with it."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=stderr)
    return 1


#: What a ``syncprep`` run imports as it goes (the verbs, rich's console and tables, the lab and
#: the real providers, msgraph, pypsrp), imported once in the test process before the first fork
#: rather than again in every child: about 0.4 s of CPU a run with the real providers (issue 19).
#: Only client-side modules: the lab's endpoints (winrm_endpoint, graph_emulator) are not here,
#: as a ``syncprep`` process that is not ``lab serve`` never imports them.
PRELOAD = (
    "reconciler.cli.command",
    "reconciler.cli.logs",
    "reconciler.render",
    "reconciler.steps",
    "reconciler.savedplan",
    "reconciler.sync",
    "reconciler.waves",
    "providers.statebackends",
    "deepdiff",
    "rich.console",
    "rich.progress",
    "rich.table",
    "providers.factory",
    "providers.lab.provider",
    "providers.lab.cli",
    "providers.graph.tenant",
    "providers.graph.connection",
    "providers.graph.transport",
    "providers.graph.auth",
    "providers.entraconnect.statefiles",
    "providers.entraconnect.server",
    "pypsrp.powershell",
    "pypsrp.wsman",
    "pypsrp.exceptions",
    "msgraph",
    "msgraph_core",
    "kiota_abstractions.native_response_handler",
    "httpcore",
    "h11",
    "h2.connection",
    "msgraph.generated.users.users_request_builder",
    "msgraph.generated.subscribed_skus.subscribed_skus_request_builder",
    "msgraph.generated.directory.directory_request_builder",
    "msgraph.generated.directory.deleted_items.deleted_items_request_builder",
    "msgraph.generated.directory.deleted_items.graph_user.graph_user_request_builder",
)
_preloaded = []


def _preload():
    """Imports :data:`PRELOAD` in this process, once (a child inherits what its parent imported),
    and fills the caches a run fills as it goes (:func:`_warm`)."""
    if not _preloaded:
        for name in PRELOAD:
            importlib.import_module(name)
        _warm()
        _preloaded.append(True)


def _warm():
    """Plans of the example files on a small lab, turned into the saved plan's JSON, in this
    process: cattrs generates each class's (un)structuring function on its first use (compile
    and a dispatch walk, about 10 ms a run that writes or checks a plan), and a child inherits
    the functions as it inherits the modules. Caches only: a child makes the same ones when
    they are missing, and these plans are not kept."""
    from pathlib import Path

    from providers.lab import scenario
    from providers.lab.provider import LabTarget
    from reconciler.apply import observe
    from reconciler.loader import load_desired
    from reconciler.plan import build_plan
    from reconciler.serialize import plan_to_dict

    for name in ("example.toml", "rebuild.toml"):
        desired = load_desired(Path(__file__).resolve().parents[2] / "desired-state" / name)
        target = LabTarget(scenario.build(users=4))
        plan_to_dict(build_plan(desired, observe(target, desired), "warm-up"))


def run_forked(oplog_path, kill, args, cwd, env, timeout=120):
    """``python harness.py OPLOG KILL -- ARGS`` in ``cwd`` with ``env``, in a forked child:
    a CompletedProcess (returncode -9 when killed), its output as text. With ``oplog_path``
    None, ``syncprep ARGS`` as the installed script runs it, without faults."""
    return run_forked_together([{"oplog_path": oplog_path, "kill": kill, "args": args, "cwd": cwd, "env": env}], timeout)[0]


def run_forked_together(runs, timeout):
    """Each of ``runs`` (:func:`run_forked`'s arguments in a dict) in a child of its own, all
    forked before any is waited for, so that they run at once (as ``capture.run_together``
    starts interpreters): a CompletedProcess each, in their order. On a timeout every child
    still running is killed and TimeoutExpired raised."""
    _preload()
    with contextlib.ExitStack() as files:
        outputs = [(files.enter_context(tempfile.TemporaryFile()), files.enter_context(tempfile.TemporaryFile())) for _ in runs]
        sys.stdout.flush()
        sys.stderr.flush()
        pids, statuses = [], {}
        try:
            for one, (out, err) in zip(runs, outputs):
                command = functools.partial(run, one["oplog_path"], one["kill"], [str(a) for a in one["args"]])
                pid = os.fork()
                if pid == 0:  # the child: never returns into the test process
                    _be_the_child(out.fileno(), err.fileno(), one["cwd"], one["env"], command)
                pids.append(pid)
            ended = _wait_for(pids, timeout, statuses)
        finally:
            for pid in pids:  # none is left running when the wait did not end (timeout, ^C)
                if pid not in statuses:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
        if not ended:
            raise subprocess.TimeoutExpired(["harness", *(str(a) for one in runs for a in [one["kill"], *one["args"]])], timeout)
        completed = []
        for one, (out, err), pid in zip(runs, outputs, pids):
            status = statuses[pid]
            code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
            out.seek(0)
            err.seek(0)
            completed.append(subprocess.CompletedProcess(one["args"], code, out.read().decode(errors="replace"), err.read().decode(errors="replace")))
        return completed


def _wait_for(pids, timeout, statuses):
    """Waits for the children ``pids`` (their wait status into ``statuses``), for at most
    ``timeout`` seconds: whether all ended. Woken when a child ends (a pidfd each, where the
    system has them) rather than every few milliseconds."""
    deadline = time.monotonic() + timeout
    while True:
        for pid in pids:
            if pid not in statuses:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    statuses[pid] = status
        if len(statuses) == len(pids):
            return True
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        _until_one_ends([pid for pid in pids if pid not in statuses], left)


def _until_one_ends(pids, seconds):
    """Sleeps until one of ``pids`` ends or ``seconds`` have passed (5 ms at most without pidfds)."""
    fds = []
    try:
        for pid in pids:
            fds.append(os.pidfd_open(pid))
        select.select(fds, [], [], seconds)
    except (AttributeError, OSError):
        time.sleep(min(seconds, 0.005))
    finally:
        for fd in fds:
            os.close(fd)


def _be_the_child(out_fd, err_fd, cwd, env, command, line_buffered=False):
    """In a forked child: standard output and error on ``out_fd`` and ``err_fd``, ``cwd`` and
    ``env`` as a new process has them, then ``command()`` (a syncprep run), and the child exits
    with its status, whatever happens. Never returns into the test process."""
    status = 1
    try:
        os.dup2(out_fd, 1)
        os.dup2(err_fd, 2)
        for fd in {out_fd, err_fd} - {1, 2}:
            os.close(fd)
        buffering = 1 if line_buffered else -1
        sys.stdout = open(1, "w", buffering=buffering, closefd=False)
        sys.stderr = open(2, "w", buffering=buffering, closefd=False)
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(env)
        sys.modules["providers.lab.store"]._written.clear()  # a new process remembers no file
        status = _exit_status(command(), sys.stderr)
    except SystemExit as exc:
        status = _exit_status(exc.code, sys.stderr)
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(status)


class Forked:
    """``syncprep ARGS`` (e.g. ``lab serve``) in ``cwd`` with ``env``, running in a child forked
    from this process, as :func:`run_forked` runs a command but without waiting for it: the
    parts of a ``subprocess.Popen(..., stdout=PIPE, stderr=STDOUT, text=True)`` that the tests
    use (``stdout``, ``poll``, ``wait``, ``terminate``, ``kill``, ``returncode``). A new
    interpreter for ``lab serve`` cost each served test about 0.3 s of CPU (issue 19)."""

    def __init__(self, args, cwd, env):
        _preload()
        read, write = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child: never returns into the test process
            os.close(read)
            _be_the_child(write, write, cwd, env, lambda: run(None, "none", [str(a) for a in args]), line_buffered=True)
        os.close(write)
        self.pid = pid
        self.args = args
        self.returncode = None
        self.stdout = open(read, encoding="utf-8", errors="replace")

    def poll(self):
        if self.returncode is None:
            done, status = os.waitpid(self.pid, os.WNOHANG)
            if done:
                self.returncode = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        return self.returncode

    def wait(self, timeout=None):
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(["syncprep", *map(str, self.args)], timeout)
            time.sleep(0.005)
        self.stdout.close()
        return self.returncode

    def send_signal(self, signum):
        if self.poll() is None:
            os.kill(self.pid, signum)

    def terminate(self):
        self.send_signal(signal.SIGTERM)

    def kill(self):
        self.send_signal(signal.SIGKILL)


if __name__ == "__main__":
    sys.exit(run(sys.argv[1], sys.argv[2], sys.argv[sys.argv.index("--") + 1 :]))
