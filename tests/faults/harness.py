"""Run ``syncprep`` with a fault: killed with SIGKILL at a step boundary or inside a step.

Usage: python harness.py OPLOG KILL -- syncprep-args...

KILL is ``none``, ``boundary:N`` (after the N-th step is journalled done) or
``inside:N`` (inside the N-th provider call: its effect is saved, the engine has
not recorded it). Every provider write is appended to OPLOG (one JSON line,
fsynced) so the test can prove that nothing was done twice across the kill.
"""

import importlib
import json
import os
import signal
import sys

from providers.lab import provider as lab_provider
from reconciler import journal
from reconciler.cli import main

oplog_path, kill = sys.argv[1], sys.argv[2]
args = sys.argv[sys.argv.index("--") + 1 :]
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
sys.exit(main(args))
