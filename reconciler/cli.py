"""The ``syncprep`` command.

Exit codes: 0 success (for ``plan --detailed-exitcode``: no changes), 1 error,
2 changes present (``plan --detailed-exitcode``), 4 ``apply`` done but a targeted
user did not end as desired (no licence, or no mailbox), 130 interrupted.
Known errors are one line each on stderr, never a traceback.

Heavy imports (the planner's deepdiff, the real providers' SDKs) happen inside
the commands that need them, so ``syncprep --help`` stays fast.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from reconciler import __version__
from reconciler.errors import ConfigError, ReconcilerError

EXIT_OK, EXIT_ERROR, EXIT_CHANGES, EXIT_USERS, EXIT_INTERRUPTED = 0, 1, 2, 4, 130
ALLOW_ENV = "SYNCPREP_ALLOW_ENDPOINTS"  # providers.endpoints.ALLOW_ENV, without importing it for --help
CA_BUNDLE_ENV = "SYNCPREP_CA_BUNDLE"
LOG_LEVEL_ENV = "SYNCPREP_LOG_LEVEL"


class _Parser(argparse.ArgumentParser):
    """Usage errors exit 1, not argparse's 2: 2 means "changes" to a CI job."""

    def error(self, message):
        self.print_usage(sys.stderr)
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message}\n")


def _parser():
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--no-color", action="store_true", help="plain output (NO_COLOR is honoured too)")
    common.add_argument(
        "--log-level",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        default=argparse.SUPPRESS,
        type=str.upper,
        help=f"diagnostics on stderr, scrubbed of credentials (also {LOG_LEVEL_ENV})",
    )
    lab_option = argparse.ArgumentParser(add_help=False)
    lab_option.add_argument("--lab", metavar="FILE", help="the lab file (default .syncprep/lab.json; created on first use)")
    # Where credentials may go is the operator's say, never the desired-state file's.
    target_options = argparse.ArgumentParser(add_help=False)
    target_options.add_argument(
        "--allow-endpoint",
        action="append",
        default=[],
        metavar="URL",
        help=f"allow sending credentials to this endpoint (URL or host; repeatable; also {ALLOW_ENV}, comma-separated)",
    )
    target_options.add_argument(
        "--no-cert-validation", action="store_true", help="accept cert_validation = false of the desired-state file for a host that is not loopback"
    )
    target_options.add_argument("--ca-bundle", metavar="PEM", help=f"check TLS certificates against this CA bundle (also {CA_BUNDLE_ENV})")

    parser = _Parser(
        prog="syncprep",
        description="Plan and apply the preparation of an Entra Connect hybrid Exchange environment for third-party mailbox migration.",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"syncprep {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=_Parser)

    validate = commands.add_parser("validate", parents=[common], help="check desired-state files")
    validate.add_argument("files", nargs="+", metavar="FILE")

    plan = commands.add_parser("plan", parents=[common, lab_option, target_options], help="show what apply would do")
    plan.add_argument("file", metavar="FILE")
    plan.add_argument("--json", action="store_true", help="the plan as JSON")
    plan.add_argument("--detailed-exitcode", action="store_true", help="exit 0 no changes, 1 error, 2 changes")
    plan.add_argument("--show-scripts", action="store_true", help="show the PowerShell each server step will run")
    plan.add_argument("-out", "--out", dest="out", metavar="PLANFILE", help="save the plan (JSON) for review; apply it with 'syncprep apply PLANFILE'")
    plan.add_argument("--report", metavar="FILE", help="write the per-user outcome, every user, as CSV or JSON (by the extension)")

    show = commands.add_parser("show", parents=[common], help="render a saved plan")
    show.add_argument("planfile", metavar="PLANFILE")
    show_format = show.add_mutually_exclusive_group()
    show_format.add_argument("--json", action="store_true")
    show_format.add_argument("--markdown", action="store_true", help="a pull-request comment")
    show.add_argument("--mask-users", action="store_true", help="hide user principal names")

    drift = commands.add_parser("drift", parents=[common, lab_option, target_options], help="report drift from the desired state (read-only)")
    drift.add_argument("file", metavar="FILE")
    drift_format = drift.add_mutually_exclusive_group()
    drift_format.add_argument("--json", action="store_true")
    drift_format.add_argument("--markdown", action="store_true", help="for an issue: no @mentions; --mask-users hides UPNs")
    drift.add_argument("--mask-users", action="store_true", help="with --markdown: hide user principal names")

    apply = commands.add_parser("apply", parents=[common, lab_option, target_options], help="plan, confirm, and carry it out (or apply a saved plan)")
    apply.add_argument("file", metavar="FILE", help="a desired-state file, or a plan saved with 'plan -out'")
    apply.add_argument(
        "--desired", metavar="DESIRED", help="with a saved plan: the desired-state file it was made from (checked by content; the path in the plan is never used)"
    )
    apply.add_argument("--max-plan-age", metavar="AGE", help="with a saved plan: refuse it when older than AGE (90m, 72h, 7d; default 72h)")
    apply.add_argument("--auto-approve", action="store_true", help="do not ask for confirmation")
    apply.add_argument(
        "--approve-irreversible", action="store_true", help="approve the plan's irreversible steps (hard deletes); --auto-approve alone is not enough"
    )
    apply.add_argument(
        "--approve-threshold-raise", action="store_true", help="approve a temporary raise of the export deletion threshold (restored afterwards)"
    )
    apply.add_argument("--force", action="store_true", help="apply a plan over the safety thresholds (too many deletes)")
    apply.add_argument("--resume", action="store_true", help="finish an apply that was cut short (observes again; done steps are not repeated)")
    apply.add_argument("--until", metavar="TIME", help="start no step that cannot finish before TIME (HH:MM UTC or ISO); stop safe and resumable")
    apply.add_argument("--report", metavar="FILE", help="write the per-user outcome as read back after the apply, as CSV or JSON (by the extension)")

    unlock = commands.add_parser("force-unlock", parents=[common, lab_option, target_options], help="release the lock of an apply that is gone")
    unlock.add_argument("lock_id", metavar="LOCK_ID")
    unlock.add_argument("file", metavar="FILE", nargs="?", help="the desired-state file whose target is locked (default: the lab)")

    export = commands.add_parser("export", parents=[common, lab_option, target_options], help="write the observed state as a desired-state file")
    export.add_argument("--from", dest="source", metavar="FILE", help="a desired-state file whose [target] to export (default: the lab)")
    export.add_argument("-o", "--output", metavar="OUT", help="write here instead of standard output")

    lab = commands.add_parser("lab", parents=[common], help="manage the embedded lab")
    lab_commands = lab.add_subparsers(dest="lab_command", metavar="LAB_COMMAND", required=True, parser_class=_Parser)
    init = lab_commands.add_parser("init", parents=[common, lab_option], help="create the lab from a scenario")
    init.add_argument("--scenario", default="default", help="default, already-prepared, empty-tenant, duplicate-upn-in-bin, escaped-comma-dn or half-done")
    init.add_argument("--users", type=int, default=20, help="mailbox users in the synced OU (default 20)")
    init.add_argument("--force", action="store_true", help="replace an existing lab")
    show = lab_commands.add_parser("show", parents=[common, lab_option], help="show the lab")
    show.add_argument("--json", action="store_true")
    show.add_argument("--all-users", action="store_true")
    scheduler = lab_commands.add_parser("scheduler", parents=[common, lab_option], help="pause or resume the sync scheduler")
    scheduler.add_argument("state", choices=["pause", "resume"])
    sync = lab_commands.add_parser("sync", parents=[common, lab_option], help="run a sync cycle (Start-ADSyncSyncCycle)")
    sync.add_argument("--policy", choices=["Delta", "Initial"], default="Delta")
    sync.add_argument("--no-wait", action="store_true", help="start it and return; it runs as lab time passes")
    lab_commands.add_parser("upgrade", parents=[common, lab_option], help="an Entra Connect upgrade: deleted stock rules come back")
    advance = lab_commands.add_parser("advance", parents=[common, lab_option], help="let lab time pass")
    advance.add_argument("minutes", type=int)
    serve = lab_commands.add_parser(
        "serve", parents=[common, lab_option], help="serve the lab as a Graph endpoint and a WinRM endpoint on loopback, for the real providers"
    )
    serve.add_argument("--graph-port", type=int, default=0, help="default: any free port")
    serve.add_argument("--winrm-port", type=int, default=0, help="default: any free port")
    serve.add_argument("--speed", type=float, default=60.0, help="lab minutes per real second while serving (default 60)")
    serve.add_argument(
        "--tls", action="store_true", help="serve Graph over HTTPS (HTTP/2 to clients that offer it) with a self-signed certificate it prints the CA bundle of"
    )
    return parser


def main(argv=None):
    args = _parser().parse_args(argv)
    _configure_logging(getattr(args, "log_level", None) or os.environ.get(LOG_LEVEL_ENV))
    no_color = args.no_color or bool(os.environ.get("NO_COLOR"))
    out = make_console(no_color)
    err = make_console(no_color, stderr=True)
    handler = {
        "validate": _validate,
        "plan": _plan,
        "apply": _apply,
        "show": _show,
        "force-unlock": _force_unlock,
        "export": _export,
        "drift": _drift,
        "lab": _lab,
    }[args.command]
    try:
        return handler(args, out, err)
    except ConfigError as exc:
        for problem in exc.problems:
            err.print(f"[red]error:[/red] {_escape(scrub(problem))}")
        return EXIT_ERROR
    except ReconcilerError as exc:
        err.print(f"[red]error:[/red] {_escape(scrub(str(exc)))}")
        return EXIT_ERROR
    except OSError as exc:
        # A path given on the command line that cannot be read or written.
        where = exc.filename if exc.filename is not None else "file"
        err.print(f"[red]error:[/red] {_escape(str(where))}: {_escape(scrub(exc.strerror or str(exc)))}")
        return EXIT_ERROR
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/yellow]")
        return EXIT_INTERRUPTED


def _configure_logging(level):
    """``--log-level``: records of every library on stderr, each one scrubbed of credentials."""
    if not level:
        return
    import logging

    if level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise SystemExit(f"syncprep: error: {LOG_LEVEL_ENV}={level!r}: choose DEBUG, INFO, WARNING or ERROR")
    class _Stderr(logging.StreamHandler):
        # Whatever sys.stderr is when a record comes (tests and wrappers replace it).
        stream = property(lambda self: sys.stderr, lambda self, value: None)

    handler = _Stderr()
    handler.addFilter(_ScrubRecords())
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level.upper())


class _ScrubRecords:
    """A logging filter that rewrites each record's text (traceback included) without credentials."""

    def filter(self, record):
        import logging

        record.msg = scrub(record.getMessage())
        record.args = None
        if record.exc_info:
            record.exc_text = scrub(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        if record.stack_info:
            record.stack_info = scrub(record.stack_info)
        return True


def scrub(text):
    from reconciler.redact import scrub as _scrub

    return _scrub(text)


def make_console(no_color=False, stderr=False):
    """--no-color and NO_COLOR mean plain text: no colour and no other escape codes either."""
    from rich.console import Console

    if no_color:
        return Console(color_system=None, no_color=True, highlight=False, stderr=stderr, soft_wrap=True)
    return Console(highlight=False, stderr=stderr, soft_wrap=True)


def _escape(text):
    from rich.markup import escape

    return escape(text)


# ---------------------------------------------------------------------------- commands


def _validate(args, out, err):
    from reconciler.loader import load_desired

    failed = False
    for name in args.files:
        try:
            desired = load_desired(name)
        except ConfigError as exc:
            failed = True
            for problem in exc.problems:
                err.print(f"[red]error:[/red] {_escape(problem)}")
            continue
        out.print(f"{_escape(name)}: valid ({len(desired.rules)} rule(s), {len(desired.licenses)} licence set(s), target {desired.target.kind.value})")
    return EXIT_ERROR if failed else EXIT_OK


def _open(desired, args, err=None):
    """The target of ``desired``, with the endpoints the operator allowed (and warnings on stderr)."""
    from providers.factory import open_target

    allowance = _allowance(args)
    target = open_target(desired.target, lab_path=getattr(args, "lab", None), source=desired.source, allowance=allowance)
    for warning in allowance.warnings:
        (err or make_console(True, stderr=True)).print(f"[yellow]warning: {_escape(warning)}[/yellow]")
    return target


def _allowance(args):
    from providers.endpoints import Allowance

    ca_bundle = getattr(args, "ca_bundle", None) or os.environ.get(CA_BUNDLE_ENV) or None
    if ca_bundle and not Path(ca_bundle).is_file():
        raise ReconcilerError(f"--ca-bundle / {CA_BUNDLE_ENV}: {ca_bundle} is not a file")
    return Allowance.from_operator(
        getattr(args, "allow_endpoint", ()),
        confirm=_ask_endpoint if sys.stdin and sys.stdin.isatty() else None,
        insecure_tls=getattr(args, "no_cert_validation", False),
        ca_bundle=ca_bundle,
    )


def _ask_endpoint(question):
    answer = input(f"{question} Only 'yes' is accepted: ") if sys.stdin else ""
    return answer.strip() == "yes"


def _scripts(plan, target):
    scripts = {}
    for step in plan.steps:
        if step.provider == "entra-connect":
            text = target.server.scripts_for(step.operation)
            if text:
                scripts[step.id] = text
    return scripts


def _plan(args, out, err):
    from reconciler.apply import observe
    from reconciler.loader import load_desired
    from reconciler.plan import build_plan
    from reconciler.render import PlanRenderer, print_json

    desired = load_desired(args.file)
    if args.out:
        from reconciler.files import refuse_inputs, refuse_symlink

        refuse_symlink(args.out)
        refuse_inputs(args.out, {"the desired-state file": args.file})
    if args.report:
        from reconciler import report as report_file

        report_file.check_path(args.report, _report_inputs(args))
    target = _open(desired, args, err)
    try:
        observed = observe(target, desired)
        _warn_interrupted(target, observed, err)
        plan = build_plan(desired, observed, target.description, purged=_purged(target, observed))
        scripts = _scripts(plan, target) if (args.show_scripts or args.json or args.out) else {}
    finally:
        target.close()
    if args.out:
        from reconciler import savedplan

        saved = savedplan.make_saved(plan, desired, observed, scripts, target.key, signing_key=savedplan.signing_key())
        savedplan.write(saved, args.out, inputs={"the desired-state file": args.file, "the lab file": getattr(target, "path", None)})
        err.print(
            f"Saved the plan to {_escape(args.out)}; apply exactly this plan with: syncprep apply {_escape(args.out)} --desired {_escape(args.file)}"
        )
    if args.report:
        report_file.write(report_file.plan_rows(plan), args.report, _report_inputs(args, target))
        err.print(f"Wrote the per-user outcome of {len(plan.outcomes)} user(s) to {_escape(args.report)}")
    if args.json:
        from reconciler.serialize import plan_to_dict

        print_json(out, plan_to_dict(plan, scripts))
    else:
        PlanRenderer(out).render(plan, scripts if args.show_scripts else None)
        if args.show_scripts and not scripts and plan.steps:
            out.print("[dim](this target runs no scripts: the lab acts in-process)[/dim]")
    if args.detailed_exitcode and plan.has_changes:
        return EXIT_CHANGES
    return EXIT_OK


def _report_inputs(args, target=None):
    """The files a ``--report`` must never replace: the command's inputs and outputs."""
    return {
        "the desired-state file": getattr(args, "desired", None) or args.file,
        "the plan file": args.file,
        "the plan written by -out": getattr(args, "out", None),
        "the lab file": getattr(target, "path", None) or getattr(args, "lab", None),
    }


def _apply(args, out, err):
    from reconciler import savedplan
    from reconciler.apply import apply_plan, observe
    from reconciler.journal import Journal
    from reconciler.loader import load_desired
    from reconciler.plan import build_plan
    from reconciler.render import ApplyRenderer, PlanRenderer

    if args.report:
        from reconciler import report as report_file

        report_file.check_path(args.report, _report_inputs(args))
    saved, desired = _saved_and_desired(args) if savedplan.is_saved_plan(args.file) else (None, None)
    if saved is None:
        if args.desired or args.max_plan_age:
            raise ReconcilerError(f"{args.file}: --desired and --max-plan-age go with a saved plan (made with 'plan -out'), not a desired-state file")
        desired = load_desired(args.file)
    target = _open(desired, args, err)
    if saved is not None and saved["target_key"] != target.key:
        target.close()
        raise savedplan.StalePlan(f"{args.file}: the plan was made for {saved.get('target')}, not for this target ({target.key}); nothing was changed")
    try:
        with _lock(target, f"apply {args.file}", take_over_dead=args.resume) as lock:
            if lock.taken_over:
                err.print(f"[yellow]took over the lock {lock.taken_over.get('id')} of the interrupted apply (pid {lock.taken_over.get('pid')} is gone)[/yellow]")
            target.refresh()
            journal = Journal(_state_file(target, "journal"))
            interrupted = journal.last_interrupted()
            if interrupted is not None:
                err.print(f"[yellow]{_escape(_interrupted_text(interrupted))}; this apply observes again and carries on from there[/yellow]")
            elif args.resume:
                out.print("Nothing to resume: the last apply on this target finished.")
                return EXIT_OK
            until = _parse_until(args.until, target) if args.until else None
            observed = observe(target, desired)
            plan = build_plan(desired, observed, target.description, purged=_purged(target, observed))
            if saved is not None:
                _check_saved(saved, desired, observed, plan, target)
            PlanRenderer(out).render(plan)
            owed = interrupted.threshold_owed if interrupted is not None else None
            if not plan.has_changes and owed is not None:
                # Nothing else is left, but the interrupted run raised the export deletion
                # threshold: this apply (of no steps) puts it back, journaled.
                apply_plan(plan, desired, target, journal=journal)
                out.print(f"The export deletion threshold the interrupted apply raised is put back to {owed}.")
                return EXIT_OK if observe(target, desired).server.deletion_threshold == owed else EXIT_ERROR
            if not plan.has_changes:
                if interrupted is not None:
                    # Nothing was left to do: the interrupted run is finished now.
                    from reconciler.serialize import plan_checksum

                    journal.start(plan_checksum(plan), "apply (nothing left)", [])
                    journal.end("done")
                return EXIT_OK
            if plan.unsafe and not args.force:
                raise ReconcilerError("; ".join(plan.unsafe) + " (pass --force; nothing was changed)")
            approvals = _approvals(args, plan, out)
            if not args.auto_approve and not _confirm(out, plan):
                err.print("Apply cancelled; nothing was changed.")
                return EXIT_ERROR
            out.print()
            renderer = ApplyRenderer(out, len(plan.steps))
            previous = signal.signal(signal.SIGTERM, _raise_interrupt)
            try:
                report = apply_plan(
                    plan, desired, target, on_event=renderer, approvals=approvals, force=args.force, journal=journal, until=until
                )
            finally:
                signal.signal(signal.SIGTERM, previous)
            renderer.report(report)
            if report.stopped_for_window:
                out.print("[yellow]Stopped before the window closes; the environment is safe. Finish with 'syncprep apply --resume'.[/yellow]")
            left = _read_back(report, desired, target, args, out)
            if not report.ok:
                return EXIT_ERROR
            return EXIT_USERS if left else EXIT_OK
    finally:
        target.close()


def _saved_and_desired(args):
    """A saved plan, verified and bound to the desired-state file the operator gave,
    before any other file is read or anything connected (the plan's paths are never used)."""
    from reconciler import savedplan
    from reconciler.loader import load_desired

    max_age = savedplan.parse_age(args.max_plan_age) if args.max_plan_age else savedplan.DEFAULT_MAX_AGE
    saved = savedplan.load_verified(args.file, key=savedplan.signing_key(), max_age=max_age)
    if not args.desired:
        raise ReconcilerError(
            f"{args.file}: give the desired-state file the plan was made from: syncprep apply {args.file} --desired FILE "
            "(the path written in a plan is not trusted); nothing was read or changed"
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

    rows = ended(report.outcomes, observe(target, desired).tenant)
    if args.report:
        from reconciler import report as report_file

        report_file.write(rows, args.report, _report_inputs(args, target))
        out.print(f"Wrote the per-user outcome of {len(rows)} user(s) to {_escape(args.report)}")
    left = [r for r in rows if not r["as_desired"]]
    if left:
        out.print(f"[yellow]{len(left)} targeted user(s) did not end with a licence and a mailbox:[/yellow]")
        for row in left[:20]:
            why = row["reason"] or f"licence {row['licence_actual']}, mailbox {row['mailbox_actual']}"
            out.print(f"  [yellow]{_escape(row['upn'])}: {_escape(why)}[/yellow]")
        if len(left) > 20:
            out.print(f"  [yellow]and {len(left) - 20} more (--report FILE lists every user)[/yellow]")
    return left


def _state_file(target, kind):
    from reconciler.journal import target_slug

    return target.state_dir() / f"{target_slug(target.key)}.{kind}"


def _lock(target, command, take_over_dead=False):
    from reconciler.journal import TargetLock

    return TargetLock(_state_file(target, "lock"), command, take_over_dead=take_over_dead)


def _purged(target, observed):
    """Users an earlier apply on this target purged and still owes their licences (its journal)."""
    from reconciler.journal import purge_owed
    from reconciler.recreated import from_record

    return from_record(purge_owed(_state_file(target, "journal")), observed.tenant.skus)


def _interrupted_text(run):
    paused = "; it had paused the sync scheduler, which is still off" if run.scheduler_paused else ""
    where = f" in step '{run.step}'" if run.step else ""
    how = "was interrupted" if run.killed else "stopped before the end of its plan"
    owed = f"; it had raised the export deletion threshold, which it owes back to {run.threshold_owed}" if run.threshold_owed is not None else ""
    return f"the last apply (run {run.run}, started {run.started}) {how}{where}{paused}{owed}"


def _warn_interrupted(target, observed, err):
    """plan and drift say plainly when a killed apply left the scheduler paused."""
    from reconciler.journal import last_interrupted

    from attrs import evolve

    run = last_interrupted(_state_file(target, "journal"))
    if run is None or not run.killed:
        return None
    still_paused = run.scheduler_paused and not observed.server.scheduler.sync_cycle_enabled
    text = _interrupted_text(run if still_paused else evolve(run, scheduler_paused=False))
    err.print(f"[yellow]warning: {_escape(text)}; 'syncprep apply --resume' finishes the job[/yellow]")
    return text


def _parse_until(text, target):
    import datetime as dt

    now = target.now()
    try:
        if len(text) <= 5 and ":" in text:
            hours, minutes = (int(p) for p in text.split(":"))
            moment = now.replace(hour=hours, minute=minutes, second=0, microsecond=0)
            return moment if moment > now else moment + dt.timedelta(days=1)
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ReconcilerError(f"--until {text!r}: give HH:MM (UTC, on the target's clock) or an ISO time such as 2026-01-05T23:30Z") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)


def _check_saved(data, desired, observed, plan, target):
    """The plan made now must be the saved one: the same steps and the same scripts."""
    from reconciler import savedplan
    from reconciler.serialize import plan_to_dict

    savedplan.check_fresh(data, desired, observed, target.key)
    if plan_to_dict(plan, _scripts(plan, target))["steps"] != data["steps"]:
        raise savedplan.StalePlan("plan is stale: planning again gives other steps or scripts; nothing was changed; make a new plan")


def _export(args, out, err):
    from reconciler.export import export_desired, observe_for_export

    if args.output:
        from reconciler.files import refuse_inputs, refuse_symlink

        refuse_symlink(args.output)
        refuse_inputs(args.output, {"the desired-state file": args.source, "the lab file": args.lab})
    if args.source:
        from reconciler.loader import load_desired

        desired = load_desired(args.source)
        spec = desired.target
        target = _open(desired, args, err)
    else:
        from providers.lab import open_lab_target
        from reconciler.desired import TargetSpec

        target = open_lab_target(args.lab)
        spec = TargetSpec(lab=args.lab) if args.lab else None
    try:
        observed = observe_for_export(target)
    finally:
        target.close()
    text = export_desired(observed, target_kind=spec.kind.value if spec else "lab", target=spec, description=target.description)
    if args.output:
        from reconciler.files import write_private

        inputs = {"the desired-state file": args.source, "the lab file": getattr(target, "path", None)}
        write_private(args.output, text, inputs)
        err.print(f"Wrote {_escape(args.output)}; 'syncprep plan {_escape(args.output)}' shows no changes.")
    else:
        out.file.write(text)
    return EXIT_OK


def _serve(args, out, path):
    """``lab serve``: both endpoints over one lab until Ctrl-C. Credentials come from the
    environment, the same variables the providers read; none is ever printed."""
    import threading

    from providers.lab.graph_emulator import GraphEmulator
    from providers.lab.host import LabHost
    from providers.lab.winrm_endpoint import WinRMEndpoint

    names = ("SYNCPREP_GRAPH_TOKEN", "SYNCPREP_WINRM_USERNAME", "SYNCPREP_WINRM_PASSWORD")
    missing = [n for n in names if not os.environ.get(n)]
    if missing:
        raise ReconcilerError(f"lab serve: set {', '.join(missing)} in the environment first (the clients read the same variables)")
    tls_folder = tls = None
    if args.tls:
        import tempfile

        from providers.lab.tls import make_certificate

        tls_folder = tempfile.mkdtemp(prefix="syncprep-serve-")
        tls = make_certificate(tls_folder)
    host = LabHost.open(path, speed=args.speed)
    graph = GraphEmulator(host, token=os.environ["SYNCPREP_GRAPH_TOKEN"], port=args.graph_port, tls=tls)
    winrm = WinRMEndpoint(host, os.environ["SYNCPREP_WINRM_USERNAME"], os.environ["SYNCPREP_WINRM_PASSWORD"], port=args.winrm_port)
    graph_url = graph.start()
    winrm_host, winrm_port = winrm.start()
    try:
        out.print(f"Serving the lab {_escape(str(path))} (lab time runs at {args.speed:g} minutes per second). Ctrl-C stops.")
        out.print(f"  Microsoft Graph: {graph_url}")
        out.print(f"  WinRM (HTTP, Basic): {winrm_host}:{winrm_port}")
        out.print("Allow its endpoints where syncprep runs (credentials go only where you allow):")
        out.print(_escape(f"export {ALLOW_ENV}={graph_url},http://{winrm_host}:{winrm_port}"))
        if tls:
            out.print(_escape(f"export {CA_BUNDLE_ENV}={tls[0]}"))
        out.print("Put this target in a desired-state file:")
        out.print(
            _escape(
                "\n".join(
                    [
                        "[target]",
                        'kind = "remote"',
                        "[target.graph]",
                        f'endpoint = "{graph_url}"',
                        'auth = "token-env"',
                        "poll_seconds = 1",
                        "[target.entra_connect]",
                        f'host = "{winrm_host}"',
                        f"port = {winrm_port}",
                        "ssl = false",
                        "poll_seconds = 1",
                        'auth = "basic"',
                        'aad_username = "admin@contoso.onmicrosoft.com"',
                    ]
                )
            )
        )
        threading.Event().wait()
    finally:
        graph.stop()
        winrm.stop()
        if tls_folder:
            import shutil

            shutil.rmtree(tls_folder, ignore_errors=True)
    return EXIT_OK


def _force_unlock(args, out, err):
    from reconciler.journal import force_unlock

    if args.file:
        from reconciler.loader import load_desired

        target = _open(load_desired(args.file), args, err)
    else:
        from providers.lab import open_lab_target

        target = open_lab_target(args.lab)
    held = force_unlock(_state_file(target, "lock"), args.lock_id)
    out.print(f"Released lock {held.get('id')} ({_escape(str(held.get('user')))}@{_escape(str(held.get('host')))}, since {held.get('since')}).")
    return EXIT_OK


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


def _show(args, out, err):
    from reconciler import savedplan
    from reconciler.render import PlanRenderer, print_json
    from reconciler.serialize import plan_from_dict

    data = savedplan.load(args.planfile)
    if args.json:
        print_json(out, data)
    elif args.markdown:
        from reconciler.markdown import render_markdown

        out.file.write(render_markdown(data, mask_users=args.mask_users, plan_file=args.planfile))
    else:
        plan = plan_from_dict(data)
        scripts = {s["id"]: s["script"] for s in data["steps"] if s.get("script")}
        if args.mask_users:
            raise ReconcilerError("--mask-users goes with --markdown")
        PlanRenderer(out).render(plan, scripts or None)
    return EXIT_OK


def _drift(args, out, err):
    from reconciler import drift
    from reconciler.loader import load_desired
    from reconciler.render import print_json, render_drift

    if args.mask_users and not args.markdown:
        raise ReconcilerError("--mask-users goes with --markdown")
    desired = load_desired(args.file)
    target = _open(desired, args, err)
    try:
        observed = drift.observe_read_only(target.server, target.tenant, desired)
        interrupted = _warn_interrupted(target, observed, err)
        purged = _purged(target, observed)
    finally:
        target.close()
    report = drift.detect(desired, observed, target.description, purged)
    if interrupted:
        from attrs import evolve

        report = evolve(report, interrupted=interrupted)
    if args.json:
        print_json(out, report.to_dict())
    elif args.markdown:
        from reconciler.markdown import drift_markdown

        out.file.write(drift_markdown(report, mask_users=args.mask_users))
    else:
        render_drift(out, report)
    return report.exit_code


def _raise_interrupt(_signum, _frame):
    # SIGTERM takes the same road as Ctrl-C, so the scheduler bracket holds.
    raise KeyboardInterrupt


def _confirm(out, plan):
    if not sys.stdin or not sys.stdin.isatty():
        raise ReconcilerError("apply needs confirmation: run it in a terminal, or pass --auto-approve")
    out.print()
    out.print(f"Apply these {len(plan.steps)} step(s) to {_escape(plan.target)}? Only 'yes' is accepted.")
    try:
        answer = input("  Enter a value: ")
    except EOFError:
        return False
    return answer.strip() == "yes"


def _lab(args, out, err):
    from providers.lab import store
    from providers.lab.world import SyncPolicy

    path = Path(args.lab) if args.lab else store.DEFAULT_PATH
    command = args.lab_command
    if command == "init":
        from providers.lab import scenario

        if path.exists() and not args.force:
            raise ReconcilerError(f"{path}: a lab exists already; pass --force to replace it")
        try:
            lab = scenario.build(args.scenario, users=args.users)
        except ValueError as exc:
            raise ReconcilerError(f"lab init: {exc}") from None
        store.save(lab, path)
        out.print(f"Created the {args.scenario} lab at {_escape(str(path))} ({args.users} mailbox users).")
        return EXIT_OK

    if command == "serve":
        return _serve(args, out, path)
    lab, created = store.load_or_create(path)
    if created:
        out.print(f"[dim]Created the default lab at {_escape(str(path))}.[/dim]")
    if command == "show":
        from providers.lab.report import lab_summary
        from reconciler.render import print_json, render_lab

        summary = lab_summary(lab, path)
        if args.json:
            print_json(out, summary)
        else:
            render_lab(out, summary, all_users=args.all_users)
        return EXIT_OK
    if command == "scheduler":
        lab.set_scheduler(args.state == "resume")
        message = f"Scheduler {'resumed' if args.state == 'resume' else 'paused'} (Set-ADSyncScheduler -SyncCycleEnabled ${str(args.state == 'resume').lower()})."
    elif command == "sync":
        policy = SyncPolicy(args.policy)
        if args.no_wait:
            cycle = lab.start_cycle(policy)
            message = f"{policy.value} cycle started; it runs until lab time {lab_time(cycle.ends_at)}."
        else:
            results = lab.run_cycle(policy)
            message = f"{policy.value} cycle done: " + "; ".join(f"{r.connector} {r.profile} {r.result}" for r in results)
    elif command == "upgrade":
        restored = lab.upgrade()
        names = ", ".join(f"'{r.name}' ({r.precedence})" for r in restored) or "none"
        message = f"Upgraded Entra Connect to {lab.server.build}; stock rules re-created: {names}."
    elif command == "advance":
        if args.minutes < 0:
            raise ReconcilerError("lab advance: minutes must not be negative")
        lab.advance(args.minutes)
        message = f"Lab time is now {lab.now}."
    store.save(lab, path)
    out.print(_escape(message))
    return EXIT_OK


def lab_time(minute):
    from providers.lab.world import minute_to_iso

    return minute_to_iso(minute)


if __name__ == "__main__":
    sys.exit(main())
