"""``syncprep validate FILE...``: check desired-state files, every problem on its own line."""

from __future__ import annotations

from reconciler.cli.options import EXIT_ERROR, EXIT_OK, error_line, escape, verb_parser
from reconciler.errors import ConfigError

NAME = "validate"


def add_parser(commands, parents):
    parser = verb_parser(
        commands, NAME, parents=[parents.common], help="check desired-state files", exits={0: "every file is valid", 1: "a problem (each on its own line)"}
    )
    parser.add_argument("files", nargs="+", metavar="FILE")
    return parser


def run(args, out, err):
    from reconciler.loader import load_desired

    failed = False
    for name in args.files:
        try:
            desired = load_desired(name)
        except ConfigError as exc:
            failed = True
            for problem in exc.problems:
                err.print(error_line(problem))
            continue
        out.print(f"{escape(name)}: valid ({len(desired.rules)} rule(s), {len(desired.licenses)} licence set(s), target {desired.target.kind.value})")
    return EXIT_ERROR if failed else EXIT_OK
