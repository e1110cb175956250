"""``syncprep show PLANFILE``: render a saved plan as text, JSON or a pull-request comment."""

from __future__ import annotations

from reconciler.cli.options import EXIT_OK
from reconciler.errors import ReconcilerError

NAME = "show"


def add_parser(commands, parents):
    parser = commands.add_parser(NAME, parents=[parents.common], help="render a saved plan")
    parser.add_argument("planfile", metavar="PLANFILE")
    formats = parser.add_mutually_exclusive_group()
    formats.add_argument("--json", action="store_true")
    formats.add_argument("--markdown", action="store_true", help="a pull-request comment")
    parser.add_argument("--mask-users", action="store_true", help="hide user principal names")
    return parser


def run(args, out, err):
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
