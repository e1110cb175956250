"""``syncprep force-unlock LOCK_ID [FILE]``: release the lock of an apply that is gone.

It names what it breaks (the holder, since when, the plan, where the lock lives) and
asks for confirmation: the lock id typed again at a terminal, or ``--yes``.
"""

from __future__ import annotations

import sys

from reconciler.cli import targetstate
from reconciler.cli.options import EXIT_ERROR, EXIT_OK, TARGET_ENV, escape, open_named_or_lab, verb_parser
from reconciler.errors import ReconcilerError

NAME = "force-unlock"


def add_parser(commands, parents):
    parser = verb_parser(
        commands,
        NAME,
        parents=parents.for_target,
        help="release the lock of an apply that is gone",
        exits={0: "released", 1: "error (no lock held, or another id, or not confirmed)"},
        environment=TARGET_ENV,
    )
    parser.add_argument("lock_id", metavar="LOCK_ID")
    parser.add_argument("file", metavar="FILE", nargs="?", help="the desired-state file whose target is locked (default: the lab)")
    parser.add_argument("--yes", action="store_true", help="do not ask for confirmation (the lock id is still checked)")
    return parser


def run(args, out, err):
    from reconciler.state import holder_text

    target = open_named_or_lab(args.file, args, err)
    try:
        state = targetstate.backend(target)
        held = state.read_lock()
        if held is None:
            raise ReconcilerError("no lock is held on this target")
        if held.get("id") != args.lock_id:
            raise ReconcilerError(f"the lock's id is {held.get('id')}, not {args.lock_id}: nothing released")
        err.print(escape(breaks(held, state)))
        if not args.yes and not _confirmed(args.lock_id, err):
            err.print("Not released.")
            return EXIT_ERROR
        held = state.force_unlock(args.lock_id)
    finally:
        target.close()
    out.print(f"Released lock {escape(holder_text(held))}.")
    return EXIT_OK


def breaks(held, state):
    """What releasing ``held`` breaks, in words."""
    from reconciler.state import holder_text

    command = f" ({held.get('command')})" if held.get("command") else ""
    fenced = {
        "local": "it would go on without a lock, and another apply could run beside it",
        "server": "its next journal write on the server is refused, so it stops at its next step (the step under way finishes)",
        "azureblob": "its lease is broken: its next journal write is refused, so it stops at its next step (the step under way finishes)",
    }.get(state.name, "it would go on without a lock")
    return (
        f"force-unlock breaks the lock in {state.where()}: {holder_text(held)}{command}. "
        f"Release it only if that apply is gone: if it still runs, {fenced}. "
        "An interrupted apply's journal stays; 'syncprep apply --resume' finishes its work."
    )


def _confirmed(lock_id, err):
    if not sys.stdin or not sys.stdin.isatty():
        raise ReconcilerError("force-unlock needs confirmation: run it in a terminal, or pass --yes; nothing released")
    err.print(f"Type the lock id ({escape(lock_id)}) to release it:")
    try:
        answer = input("  ")
    except EOFError:
        return False
    return answer.strip() == lock_id
