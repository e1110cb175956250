"""``syncprep plan FILE``: observe, and show what apply would do (or save it for review)."""

from __future__ import annotations

from reconciler.cli import targetstate
from reconciler.cli.options import EXIT_CHANGES, EXIT_OK, TARGET_ENV, Output, verb_parser, add_output_option, check_output, escape, open_target, lab_files, report_inputs, scripts_of

NAME = "plan"


def add_parser(commands, parents):
    parser = verb_parser(
        commands,
        NAME,
        parents=parents.for_target,
        help="show what apply would do",
        exits={0: "planned (with --detailed-exitcode: no changes)", 1: "error", 2: "changes (with --detailed-exitcode)"},
        environment={**TARGET_ENV, "SYNCPREP_PLAN_SIGNING_KEY": "signs the plan -out saves (HMAC-SHA256)"},
    )
    parser.add_argument("file", metavar="FILE")
    parser.add_argument("--json", action="store_true", help="the plan as JSON")
    parser.add_argument("--detailed-exitcode", action="store_true", help="exit 0 no changes, 1 error, 2 changes")
    parser.add_argument("--show-scripts", action="store_true", help="show the PowerShell each server step will run")
    parser.add_argument(
        "-out", "--out", dest="out", metavar="PLANFILE", help="save the plan (JSON) for review; apply it with 'syncprep apply PLANFILE'"
    )
    parser.add_argument("--report", metavar="FILE", help="write the per-user outcome, every user, as CSV or JSON (by the extension)")
    add_output_option(parser, "the plan as shown (with --json, the JSON plan; to save a plan for apply, use -out)")
    return parser


def run(args, out, err):
    from reconciler.loader import load_desired

    desired = load_desired(args.file)
    _check_outputs(args)
    target = open_target(desired, args, err)
    try:
        observed, plan = _observe_and_plan(target, desired, err)
        scripts = scripts_of(plan, target) if (args.show_scripts or args.json or args.out) else {}
    finally:
        target.close()
    if args.out:
        _save(args, plan, desired, observed, scripts, target, err)
    if args.report:
        from reconciler import report as report_file

        report_file.write(report_file.plan_rows(plan), args.report, report_inputs(args, target))
        err.print(f"Wrote the per-user outcome of {len(plan.outcomes)} user(s) to {escape(args.report)}")
    with Output(args, out, err, _inputs(args, target)) as console:
        _render(args, plan, scripts, console)
    if args.detailed_exitcode and plan.has_changes:
        return EXIT_CHANGES
    return EXIT_OK


def _inputs(args, target=None):
    return {
        "the desired-state file": args.file,
        "the plan written by -out": args.out,
        "the report": args.report,
        **lab_files(getattr(target, "path", None) or getattr(args, "lab", None)),
    }


def _check_outputs(args):
    """Refuse an output path that would replace an input, before anything is observed."""
    if args.output and args.out:
        from reconciler.files import same_place

        if same_place(args.output, args.out):
            from reconciler.errors import ReconcilerError

            raise ReconcilerError(f"{args.output}: -o and -out name the same file; -out saves the plan for apply, -o the view (nothing was written)")
    check_output(args, _inputs(args))
    if args.out:
        from reconciler.files import refuse_inputs, refuse_symlink

        refuse_symlink(args.out)
        refuse_inputs(args.out, {"the desired-state file": args.file, **lab_files(getattr(args, "lab", None))})
    if args.report:
        from reconciler import report as report_file

        report_file.check_path(args.report, report_inputs(args))


def _observe_and_plan(target, desired, err):
    from reconciler.observe import observe
    from reconciler.plan import build_plan

    observed = observe(target, desired)
    targetstate.warn_interrupted(target, observed, err)
    plan = build_plan(desired, observed, target.description, purged=targetstate.purged(target, observed))
    return observed, plan


def _save(args, plan, desired, observed, scripts, target, err):
    from reconciler import savedplan

    saved = savedplan.make_saved(plan, desired, observed, scripts, target.key, signing_key=savedplan.signing_key(), plan_path=args.out)
    savedplan.write(saved, args.out, inputs={"the desired-state file": args.file, **lab_files(getattr(target, "path", None))})
    where = saved.get("desired_ref")
    found = f" (it finds {escape(where['path'])} by its path in the {where['base']}'s folder and checks it by content)" if where else f" --desired {escape(args.file)}"
    err.print(f"Saved the plan to {escape(args.out)}; apply exactly this plan with: syncprep apply {escape(args.out)}{found}")


def _render(args, plan, scripts, out):
    from reconciler.render import PlanRenderer, print_json

    if args.json:
        from reconciler.serialize import plan_to_dict

        print_json(out, plan_to_dict(plan, scripts))
        return
    PlanRenderer(out).render(plan, scripts if args.show_scripts else None)
    if args.show_scripts and not scripts and plan.steps:
        out.print("[dim](this target runs no scripts: the lab acts in-process)[/dim]")
