"""``syncprep apply FILE``: plan, confirm, carry it out, and read back who ended as desired.

Given a saved plan and ``--desired``, applies exactly that plan or refuses it as stale.
"""

from __future__ import annotations

import re
import sys

from reconciler.cli import targetstate
from reconciler.cli.options import EXIT_ERROR, EXIT_OK, EXIT_USERS, TARGET_ENV, escape, verb_parser, open_target, report_inputs, run_to_the_end, scripts_of
from reconciler.errors import ReconcilerError

NAME = "apply"


def add_parser(commands, parents):
    parser = verb_parser(
        commands,
        NAME,
        parents=parents.for_target,
        help="plan, confirm, and carry it out (or apply a saved plan)",
        exits={
            0: "applied, or nothing to do",
            1: "error, a step failed, or not approved (the scheduler is resumed either way; 'apply --resume' finishes)",
            4: "applied, but a user a licence set targets did not end with a licence and a mailbox (each is named)",
        },
        environment={**TARGET_ENV, "SYNCPREP_PLAN_SIGNING_KEY": "a saved plan must carry this key's signature"},
    )
    parser.add_argument("file", metavar="FILE", help="a desired-state file, or a plan saved with 'plan -out'")
    parser.add_argument(
        "--desired",
        metavar="DESIRED",
        help="with a saved plan: the desired-state file it was made from (checked by content; default: the plan's path relative to this checkout's repository)",
    )
    parser.add_argument("--max-plan-age", metavar="AGE", help="with a saved plan: refuse it when older than AGE (90m, 72h, 7d; default 72h)")
    parser.add_argument("--auto-approve", action="store_true", help="do not ask for confirmation")
    parser.add_argument(
        "--approve-irreversible", action="store_true", help="approve the plan's irreversible steps (hard deletes); --auto-approve alone is not enough"
    )
    parser.add_argument(
        "--approve-threshold-raise", action="store_true", help="approve a temporary raise of the export deletion threshold (restored afterwards)"
    )
    parser.add_argument("--force", action="store_true", help="apply a plan over the safety thresholds (too many deletes)")
    parser.add_argument("--resume", action="store_true", help="finish an apply that was cut short (observes again; done steps are not repeated)")
    parser.add_argument(
        "--until",
        metavar="TIME",
        help="start no step that cannot finish before TIME: HH:MM (UTC, on the target's clock), HH:MM+01:00, or 2026-12-04T23:00+01:00; "
        "a time already past is refused; stop safe and resumable",
    )
    parser.add_argument("--report", metavar="FILE", help="write the per-user outcome as read back after the apply, as CSV or JSON (by the extension)")
    return parser


def run(args, out, err):
    from reconciler import savedplan

    if args.report:
        from reconciler import report as report_file

        report_file.check_path(args.report, report_inputs(args))
    saved, desired = _saved_and_desired(args) if savedplan.is_saved_plan(args.file) else (None, _desired_only(args))
    target = open_target(desired, args, err)
    if saved is not None and saved["target_key"] != target.key:
        target.close()
        raise savedplan.StalePlan(f"{args.file}: the plan was made for {saved.get('target')}, not for this target ({target.key}); nothing was changed")
    try:
        with targetstate.lock(target, f"apply {args.file}", take_over_dead=args.resume) as lock:
            if lock.taken_over:
                err.print(f"[yellow]took over the lock {lock.taken_over.get('id')} of the interrupted run (pid {lock.taken_over.get('pid')} is gone)[/yellow]")
            return _locked(args, out, err, target, desired, saved, lock)
    finally:
        target.close()


def _desired_only(args):
    from reconciler.loader import load_desired

    if args.desired or args.max_plan_age:
        raise ReconcilerError(f"{args.file}: --desired and --max-plan-age go with a saved plan (made with 'plan -out'), not a desired-state file")
    return load_desired(args.file)


def _locked(args, out, err, target, desired, saved, lock):
    """Under the target's lock: observe, plan (and check the saved plan), approve, apply."""
    from reconciler.apply import observe
    from reconciler.journal import Journal
    from reconciler.plan import build_plan
    from reconciler.render import PlanRenderer

    target.refresh()
    journal = Journal(targetstate.backend(target))
    interrupted = journal.last_interrupted()
    if args.resume and interrupted is not None and _a_sync_s(interrupted):
        out.print(
            f"Nothing to resume for apply: {escape(targetstate.interrupted_text(interrupted))}, and a sync owes an apply nothing; "
            "'syncprep sync --resume' runs its cycle again, 'syncprep apply' without --resume applies the desired state."
        )
        return EXIT_OK
    if interrupted is not None:
        err.print(f"[yellow]{escape(targetstate.interrupted_text(interrupted))}; this apply observes again and carries on from there[/yellow]")
    elif args.resume:
        out.print("Nothing to resume: the last apply on this target finished.")
        return EXIT_OK
    until = None
    if args.until:
        now = target.now()
        until = parse_until(args.until, now)
        out.print(escape(deadline_line(until, now)))
    observed = observe(target, desired)
    plan = build_plan(desired, observed, target.description, purged=targetstate.purged(target, observed))
    if saved is not None:
        _check_saved(saved, desired, observed, plan, target)
    from reconciler.serialize import plan_checksum

    # The lock names the plan it carries out (a saved plan's own checksum when there is one).
    lock.record_plan(saved["checksum"] if saved is not None else plan_checksum(plan))
    PlanRenderer(out).render(plan)
    if not plan.has_changes:
        return _nothing_left(plan, desired, target, journal, interrupted, out)
    if plan.unsafe and not args.force:
        raise ReconcilerError("; ".join(plan.unsafe) + " (pass --force; nothing was changed)")
    approvals = _approvals(args, plan, out)
    if not args.auto_approve and not _confirm(out, plan):
        err.print("Apply cancelled; nothing was changed.")
        return EXIT_ERROR
    return _carry_out(args, out, plan, desired, target, journal, approvals, until)


def _a_sync_s(interrupted):
    """The interrupted run was a sync on demand, and owes nothing (it never pauses or raises)."""
    from reconciler.sync import is_sync_run

    return is_sync_run(interrupted) and not interrupted.scheduler_paused and interrupted.threshold_owed is None


def _nothing_left(plan, desired, target, journal, interrupted, out):
    """No step is left. An interrupted run that raised the export deletion threshold is owed it
    back (an apply of no steps, journaled); any other interrupted run is finished now."""
    from reconciler.apply import apply_plan, observe

    owed = interrupted.threshold_owed if interrupted is not None else None
    if owed is not None:
        run_to_the_end(out)
        apply_plan(plan, desired, target, journal=journal)
        out.print(f"The export deletion threshold the interrupted apply raised is put back to {owed}.")
        return EXIT_OK if observe(target, desired, counts=False).server.deletion_threshold == owed else EXIT_ERROR
    if interrupted is not None:
        from reconciler.serialize import plan_checksum

        journal.start(plan_checksum(plan), "apply (nothing left)", [])
        journal.end("done")
    return EXIT_OK


def _carry_out(args, out, plan, desired, target, journal, approvals, until):
    from reconciler.apply import apply_plan
    from reconciler.render import ApplyRenderer

    # Approved: the apply, its read-back and --report run to their end whatever becomes of the output.
    run_to_the_end(out)
    out.print()
    renderer = ApplyRenderer(out, len(plan.steps))
    # Ctrl-C, SIGTERM and (Windows) Ctrl-Break raise KeyboardInterrupt (reconciler.interrupts,
    # installed by main): apply_plan's brackets resume the scheduler, the lock is released.
    try:
        report = apply_plan(plan, desired, target, on_event=renderer, approvals=approvals, force=args.force, journal=journal, until=until)
    finally:
        renderer.waits.stop()  # a progress display left running would keep the cursor hidden
    renderer.report(report)
    if report.stopped_for_window:
        out.print("[yellow]Stopped before the window closes; the environment is safe. Finish with 'syncprep apply --resume'.[/yellow]")
    left = _read_back(report, desired, target, args, out)
    if not report.ok:
        return EXIT_ERROR
    return EXIT_USERS if left else EXIT_OK


def _saved_and_desired(args):
    """A saved plan, verified and bound to the desired-state file the operator gave,
    before any other file is read or anything connected (the plan's paths are never used)."""
    from reconciler import savedplan
    from reconciler.loader import load_desired

    max_age = savedplan.parse_age(args.max_plan_age) if args.max_plan_age else savedplan.DEFAULT_MAX_AGE
    saved = savedplan.load_verified(args.file, key=savedplan.signing_key(), max_age=max_age)
    located = None if args.desired else savedplan.locate_desired(saved, args.file)
    if located is not None:
        desired = load_desired(located)
        savedplan.bind(saved, desired, args.file)
        return saved, desired
    if not args.desired:
        raise ReconcilerError(
            f"{args.file}: give the desired-state file the plan was made from: syncprep apply {args.file} --desired FILE "
            "(run in a checkout of the plan's repository, apply finds it by its path there); nothing was read or changed"
        )
    desired = load_desired(args.desired)
    savedplan.bind(saved, desired, args.file)
    return saved, desired


def _read_back(report, desired, target, args, out):
    """The targeted users as read back from the tenant after the apply (seen, not assumed):
    writes ``--report``, names those who did not end as desired, and returns them."""
    if not report.outcomes:
        return []
    from reconciler.apply import observe
    from reconciler.outcome import ended

    from reconciler.render import ended_lines

    rows = ended(report.outcomes, observe(target, desired, counts=False).tenant)
    for line in ended_lines(rows):
        out.print(line)
    if args.report:
        from reconciler import report as report_file

        report_file.write(rows, args.report, report_inputs(args, target))
        out.print(f"Wrote the per-user outcome of {len(rows)} user(s) to {escape(args.report)}")
    left = [r for r in rows if not r["as_desired"]]
    if left:
        out.print(f"[yellow]{len(left)} targeted user(s) did not end with a licence and a mailbox:[/yellow]")
        for row in left[:20]:
            why = row["reason"] or f"licence {row['licence_actual']}, mailbox {row['mailbox_actual']}"
            out.print(f"  [yellow]{escape(row['upn'])}: {escape(why)}[/yellow]")
        if len(left) > 20:
            out.print(f"  [yellow]and {len(left) - 20} more (--report FILE lists every user)[/yellow]")
    return left


_CLOCK = re.compile(r"^(\d{1,2}):(\d{2})(Z|[+-]\d{2}:?\d{2})?$")
UNTIL_FORMS = "HH:MM (UTC, on the target's clock), HH:MM+01:00, or a date and time such as 2026-12-04T23:00+01:00"


def parse_until(text, now):
    """``--until`` as an aware datetime, compared with ``now`` (the target's clock): HH:MM is
    today's, in UTC or the offset given. A time already past is refused, never taken as
    tomorrow's (an apply would run into the next day's window)."""
    import datetime as dt

    text = text.strip()
    clock = _CLOCK.match(text)
    try:
        if clock:
            zone = dt.timezone.utc if clock.group(3) in (None, "Z") else dt.datetime.strptime(clock.group(3).replace(":", ""), "%z").tzinfo
            moment = now.astimezone(zone).replace(hour=int(clock.group(1)), minute=int(clock.group(2)), second=0, microsecond=0)
        else:
            moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
            moment = moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)
    except ValueError:
        raise ReconcilerError(f"--until {text!r}: give {UNTIL_FORMS}; nothing was changed") from None
    if moment <= now:
        raise ReconcilerError(
            f"--until {text}: {_moment(moment)} has passed (the target's clock reads {_moment(now)}); "
            f"give a time still to come (for another day, with its date); nothing was changed"
        )
    return moment


def _moment(moment):
    import datetime as dt

    utc = moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    given = moment.strftime("%H:%M%z")
    return utc if moment.utcoffset() == dt.timedelta(0) else f"{utc} ({given[:-2]}:{given[-2:]})"


def deadline_line(moment, now):
    minutes = int((moment - now).total_seconds() // 60)
    return f"Deadline: {_moment(moment)}, {minutes // 60} h {minutes % 60:02d} min from now on the target's clock; no step starts that cannot finish before it."


def _check_saved(data, desired, observed, plan, target):
    """The plan made now must be the saved one: the same steps and the same scripts."""
    from reconciler import savedplan
    from reconciler.serialize import plan_to_dict

    savedplan.check_fresh(data, desired, observed, target.key)
    if plan_to_dict(plan, scripts_of(plan, target))["steps"] != data["steps"]:
        raise savedplan.StalePlan("plan is stale: planning again gives other steps or scripts; nothing was changed; make a new plan")


def _approvals(args, plan, out):
    """Approvals beyond the plan's: a flag each, or typed at the terminal."""
    granted = set()
    for approval in plan.approvals_needed:
        flag = {"irreversible": args.approve_irreversible, "threshold-raise": args.approve_threshold_raise}[approval]
        if flag:
            granted.add(approval)
            continue
        if not sys.stdin or not sys.stdin.isatty():
            raise ReconcilerError(f"the plan has {approval} steps: pass --approve-{approval} (or run it in a terminal to type the approval); nothing was changed")
        steps = [s for s in plan.steps if s.approval == approval]
        phrase = _approval_phrase(approval, steps)
        out.print(f"[bold red]{len(steps)} step(s) need approval ({approval}).[/bold red] Type [bold]{phrase}[/bold] to approve:")
        try:
            answer = input("  ")
        except EOFError:
            answer = ""
        if answer.strip() != phrase:
            raise ReconcilerError(f"{approval} steps not approved; nothing was changed")
        granted.add(approval)
    return frozenset(granted)


def _approval_phrase(approval, steps):
    if approval == "irreversible":
        count = sum(len(getattr(s.operation, "users", ())) for s in steps)
        return f"purge {count} users"
    return "raise the threshold"


def _confirm(out, plan):
    if not sys.stdin or not sys.stdin.isatty():
        raise ReconcilerError("apply needs confirmation: run it in a terminal, or pass --auto-approve")
    out.print()
    out.print(f"Apply these {len(plan.steps)} step(s) to {escape(plan.target)}? Only 'yes' is accepted.")
    try:
        answer = input("  Enter a value: ")
    except EOFError:
        return False
    return answer.strip() == "yes"
