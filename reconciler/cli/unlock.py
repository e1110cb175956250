"""``syncprep force-unlock LOCK_ID [FILE]``: release the lock of an apply that is gone."""

from __future__ import annotations

from reconciler.cli import targetstate
from reconciler.cli.options import EXIT_OK, TARGET_ENV, escape, open_named_or_lab, verb_parser

NAME = "force-unlock"


def add_parser(commands, parents):
    parser = verb_parser(
        commands,
        NAME,
        parents=parents.for_target,
        help="release the lock of an apply that is gone",
        exits={0: "released", 1: "error (no lock held, or another id)"},
        environment=TARGET_ENV,
    )
    parser.add_argument("lock_id", metavar="LOCK_ID")
    parser.add_argument("file", metavar="FILE", nargs="?", help="the desired-state file whose target is locked (default: the lab)")
    return parser


def run(args, out, err):
    from reconciler.journal import force_unlock

    target = open_named_or_lab(args.file, args, err)
    try:
        held = force_unlock(targetstate.state_file(target, "lock"), args.lock_id)
    finally:
        target.close()
    out.print(f"Released lock {held.get('id')} ({escape(str(held.get('user')))}@{escape(str(held.get('host')))}, since {held.get('since')}).")
    return EXIT_OK
