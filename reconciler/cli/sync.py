"""``syncprep sync FILE [--policy Initial|Delta] [--resume]``: one sync cycle on demand, as apply runs one.

Through the same provider (it waits for a running cycle, finds its own by each
connector's run-history watermark, and fails on a ``stopped-*`` run), under the same
target lock and journal, where it is journalled as a sync. It refuses to start while an
interrupted apply is owed a ``--resume`` (a killed apply, or one that left the scheduler
paused or the threshold raised: a sync would hide it from ``plan`` and ``apply --resume``).
A sync that was itself cut short owes nothing but its cycle: ``sync --resume`` takes over
its lock (its process gone) and runs the cycle again, and never an apply's lock.
"""

from __future__ import annotations

from reconciler.cli import targetstate
from reconciler.cli.options import EXIT_ERROR, EXIT_OK, TARGET_ENV, escape, open_target, run_to_the_end, verb_parser
from reconciler.errors import ReconcilerError

NAME = "sync"


def add_parser(commands, parents):
    parser = verb_parser(
        commands,
        NAME,
        parents=parents.for_target,
        help="run a sync cycle on the target and wait for it, as apply does",
        exits={0: "the cycle ran and every run of it succeeded (or --resume: nothing to resume)", 1: "error, or a run of the cycle stopped (stopped-*)"},
        environment=TARGET_ENV,
    )
    parser.add_argument("file", metavar="FILE", help="the desired-state file that names the target")
    parser.add_argument(
        "--policy", type=_policy, default=None, metavar="Initial|Delta", help="Initial (a full sync, the default) or Delta"
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="finish a sync that was cut short: take over its lock if its process is gone, run its cycle again (its policy unless --policy)",
    )
    return parser


def _policy(text):
    from argparse import ArgumentTypeError

    for name in ("Initial", "Delta"):
        if text.lower() == name.lower():
            return name
    raise ArgumentTypeError(f"invalid policy {text!r} (choose Initial or Delta)")


def run(args, out, err):
    from reconciler.journal import last_interrupted
    from reconciler.loader import load_desired

    desired = load_desired(args.file)
    target = open_target(desired, args, err)
    try:
        if args.resume:
            # Before the lock: a sync never takes over the lock of an apply that is owed a resume.
            _refuse_if_owed(last_interrupted(targetstate.backend(target)))
        with targetstate.lock(target, f"sync {args.file}", take_over_dead="sync" if args.resume else False) as lock:
            if lock.taken_over:
                err.print(f"[yellow]took over the lock {lock.taken_over.get('id')} of the interrupted sync (pid {lock.taken_over.get('pid')} is gone)[/yellow]")
            return _locked(args, out, err, target, desired)
    finally:
        target.close()


def _refuse_if_owed(interrupted):
    """An interrupted apply is finished by 'apply --resume' before any sync (see the module)."""
    from reconciler.sync import is_sync_run

    if interrupted is None:
        return
    owed = interrupted.scheduler_paused or interrupted.threshold_owed is not None
    if owed or (interrupted.killed and not is_sync_run(interrupted)):
        raise ReconcilerError(
            f"{targetstate.interrupted_text(interrupted)}: finish it with 'syncprep apply --resume' first; no cycle was started"
        )


def _locked(args, out, err, target, desired):
    from reconciler.journal import Journal
    from reconciler.model import SyncPolicy
    from reconciler.render import ApplyRenderer
    from reconciler.sync import is_sync_run, policy_of, run_sync, sync_plan

    target.refresh()
    journal = Journal(targetstate.backend(target))
    interrupted = journal.last_interrupted()
    _refuse_if_owed(interrupted)
    resumed = interrupted if interrupted is not None and is_sync_run(interrupted) else None
    if resumed is not None:
        err.print(f"[yellow]{escape(targetstate.interrupted_text(resumed))}; this sync runs the cycle again[/yellow]")
    elif args.resume:
        out.print("Nothing to resume: no sync on this target was cut short.")
        return EXIT_OK
    if args.policy:
        policy = SyncPolicy(args.policy)
    else:  # a resume runs the cycle the killed sync ran
        policy = policy_of(resumed) if args.resume else SyncPolicy.INITIAL
    plan = sync_plan(policy, desired, target.description)
    out.print(f"Sync on {escape(target.description)}: {escape(plan.steps[0].summary)}")
    run_to_the_end(out)  # the cycle is waited for, and journalled as ended, whatever becomes of the output
    renderer = ApplyRenderer(out, 1)
    # SIGTERM and Ctrl-C stop it as they stop apply (main runs every verb under stop_signals).
    try:
        report = run_sync(plan, desired, target, on_event=renderer, journal=journal)
    finally:
        renderer.waits.stop()  # a progress display left running would keep the cursor hidden
    renderer.report(report)
    return EXIT_OK if report.ok else EXIT_ERROR
