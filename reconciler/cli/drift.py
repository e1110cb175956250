"""``syncprep drift FILE``: read-only, what drifted from the desired state."""

from __future__ import annotations

from reconciler.cli import targetstate
from reconciler.cli.options import TARGET_ENV, Output, add_output_option, check_output, lab_files, open_target, verb_parser
from reconciler.errors import ReconcilerError

NAME = "drift"


def add_parser(commands, parents):
    parser = verb_parser(
        commands,
        NAME,
        parents=parents.for_target,
        help="report drift from the desired state (read-only)",
        exits={0: "in sync", 1: "error", 2: "drift", 3: "drift unknown: something could not be read"},
        environment=TARGET_ENV,
    )
    parser.add_argument("file", metavar="FILE")
    formats = parser.add_mutually_exclusive_group()
    formats.add_argument("--json", action="store_true")
    formats.add_argument("--markdown", action="store_true", help="for an issue: no @mentions; --mask-users hides UPNs")
    parser.add_argument("--mask-users", action="store_true", help="with --markdown: hide user principal names")
    add_output_option(parser, "the report (--json: the versioned JSON report)")
    return parser


def run(args, out, err):
    from reconciler import drift
    from reconciler.loader import load_desired
    from reconciler.render import print_json, render_drift

    if args.mask_users and not args.markdown:
        raise ReconcilerError("--mask-users goes with --markdown")
    inputs = {"the desired-state file": args.file, **lab_files(args.lab)}
    check_output(args, inputs)
    desired = load_desired(args.file)
    target = open_target(desired, args, err)
    try:
        observed = drift.observe_read_only(target.server, target.tenant, desired)
        interrupted = targetstate.warn_interrupted(target, observed, err)
        purged = targetstate.purged(target, observed)
    finally:
        target.close()
    report = drift.detect(desired, observed, target.description, purged)
    if interrupted:
        from attrs import evolve

        report = evolve(report, interrupted=interrupted)
    inputs.update(lab_files(getattr(target, "path", None) or args.lab))
    with Output(args, out, err, inputs) as console:
        if args.json:
            print_json(console, report.to_dict())
        elif args.markdown:
            from reconciler.markdown import drift_markdown

            console.file.write(drift_markdown(report, mask_users=args.mask_users))
        else:
            render_drift(console, report)
    return report.exit_code
