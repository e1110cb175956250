"""``syncprep show PLANFILE``: render a saved plan as text, JSON or a pull-request comment."""

from __future__ import annotations

from reconciler.cli.options import EXIT_OK, Output, add_output_option, check_output, verb_parser
from reconciler.errors import ReconcilerError

NAME = "show"


def add_parser(commands, parents):
    parser = verb_parser(
        commands, NAME, parents=[parents.common], help="render a saved plan", exits={0: "shown", 1: "error (not a syncprep plan, or altered)"}
    )
    parser.add_argument("planfile", metavar="PLANFILE")
    formats = parser.add_mutually_exclusive_group()
    formats.add_argument("--json", action="store_true")
    formats.add_argument("--markdown", action="store_true", help="a pull-request comment")
    parser.add_argument("--mask-users", action="store_true", help="hide user principal names")
    add_output_option(parser, "the rendering (--markdown: the comment; --json: the plan)")
    return parser


def run(args, out, err):
    from reconciler import savedplan
    from reconciler.render import PlanRenderer, print_json
    from reconciler.serialize import plan_from_dict

    if args.mask_users and not args.markdown:
        raise ReconcilerError("--mask-users goes with --markdown")
    inputs = {"the plan file": args.planfile}
    check_output(args, inputs)
    data = savedplan.load(args.planfile)
    with Output(args, out, err, inputs) as console:
        if args.json:
            print_json(console, data)
        elif args.markdown:
            from reconciler.markdown import render_markdown

            console.file.write(render_markdown(data, mask_users=args.mask_users, plan_file=args.planfile))
        else:
            plan = plan_from_dict(data)
            scripts = {s["id"]: s["script"] for s in data["steps"] if s.get("script")}
            PlanRenderer(console).render(plan, scripts or None)
    return EXIT_OK
