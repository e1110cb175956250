"""``syncprep sync FILE [--policy Initial|Delta]``: one sync cycle on demand, as apply runs one.

Through the same provider (it waits for a running cycle, finds its own by each
connector's run-history watermark, and fails on a ``stopped-*`` run), under the same
target lock and journal. It refuses to start while an interrupted apply is owed a
``--resume`` (its paused scheduler or raised threshold must not be forgotten).
"""

from __future__ import annotations

from reconciler.cli import targetstate
from reconciler.cli.options import EXIT_ERROR, EXIT_OK, TARGET_ENV, escape, open_target, verb_parser
from reconciler.errors import ReconcilerError

NAME = "sync"


def add_parser(commands, parents):
    parser = verb_parser(
        commands,
        NAME,
        parents=parents.for_target,
        help="run a sync cycle on the target and wait for it, as apply does",
        exits={0: "the cycle ran and every run of it succeeded", 1: "error, or a run of the cycle stopped (stopped-*)"},
        environment=TARGET_ENV,
    )
    parser.add_argument("file", metavar="FILE", help="the desired-state file that names the target")
    parser.add_argument(
        "--policy", type=_policy, default="Initial", metavar="Initial|Delta", help="Initial (a full sync, the default) or Delta"
    )
    return parser


def _policy(text):
    from argparse import ArgumentTypeError

    for name in ("Initial", "Delta"):
        if text.lower() == name.lower():
            return name
    raise ArgumentTypeError(f"invalid policy {text!r} (choose Initial or Delta)")


def run(args, out, err):
    from reconciler.loader import load_desired
    from reconciler.model import SyncPolicy

    desired = load_desired(args.file)
    policy = SyncPolicy(args.policy)
    target = open_target(desired, args, err)
    try:
        with targetstate.lock(target, f"sync {args.file}"):
            return _locked(out, target, desired, policy)
    finally:
        target.close()


def _locked(out, target, desired, policy):
    from reconciler.journal import Journal
    from reconciler.render import ApplyRenderer
    from reconciler.sync import run_sync, sync_plan

    target.refresh()
    journal = Journal(targetstate.backend(target))
    interrupted = journal.last_interrupted()
    if interrupted is not None and (interrupted.killed or interrupted.scheduler_paused or interrupted.threshold_owed is not None):
        raise ReconcilerError(
            f"{targetstate.interrupted_text(interrupted)}: finish it with 'syncprep apply --resume' first; no cycle was started"
        )
    plan = sync_plan(policy, desired, target.description)
    out.print(f"Sync on {escape(target.description)}: {escape(plan.steps[0].summary)}")
    renderer = ApplyRenderer(out, 1)
    # SIGTERM and Ctrl-C stop it as they stop apply (main runs every verb under stop_signals).
    try:
        report = run_sync(plan, desired, target, on_event=renderer, journal=journal)
    finally:
        renderer.waits.stop()  # a progress display left running would keep the cursor hidden
    renderer.report(report)
    return EXIT_OK if report.ok else EXIT_ERROR
