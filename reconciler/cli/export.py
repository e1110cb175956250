"""``syncprep export``: write the observed state as a desired-state file that plans to no changes."""

from __future__ import annotations

from reconciler.cli.options import EXIT_OK, TARGET_ENV, check_output, escape, lab_files, open_target, verb_parser

NAME = "export"


def add_parser(commands, parents):
    parser = verb_parser(
        commands,
        NAME,
        parents=parents.for_target,
        help="write the observed state as a desired-state file",
        exits={0: "written", 1: "error"},
        environment=TARGET_ENV,
    )
    parser.add_argument("--from", dest="source", metavar="FILE", help="a desired-state file whose [target] to export (default: the lab)")
    parser.add_argument("-o", "--output", metavar="OUT", help="write here instead of standard output")
    return parser


def run(args, out, err):
    from reconciler.export import export_desired, observe_for_export

    check_output(args, {"the desired-state file": args.source, **lab_files(args.lab)})
    spec, target = _source(args, err)
    try:
        observed = observe_for_export(target)
    finally:
        target.close()
    text = export_desired(observed, target_kind=spec.kind.value if spec else "lab", target=spec, description=target.description)
    if args.output:
        from reconciler.files import write_private

        inputs = {"the desired-state file": args.source, **lab_files(getattr(target, "path", None))}
        write_private(args.output, text, inputs)
        err.print(f"Wrote {escape(args.output)}; 'syncprep plan {escape(args.output)}' shows no changes.")
    else:
        out.file.write(text)
    return EXIT_OK


def _source(args, err):
    """The target spec to write into the export (None for the default lab) and the opened target."""
    if args.source:
        from reconciler.loader import load_desired

        desired = load_desired(args.source)
        return desired.target, open_target(desired, args, err)
    from providers.lab.provider import open_lab_target
    from reconciler.desired import TargetSpec

    return (TargetSpec(lab=args.lab) if args.lab else None), open_lab_target(args.lab)
