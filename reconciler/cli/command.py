"""The command line as a whole: the parser each verb adds its own part to, and ``main``,
which turns every known error into one line and an exit code."""


from __future__ import annotations

import contextlib
import gc
import importlib
import os
import re
import sys

from reconciler import __version__
from reconciler.cli.options import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OUTPUT_CLOSED, Parents, Parser, common_options, error_line, make_console, merge_common
from reconciler.errors import ConfigError, ReconcilerError


#: Each verb's module by the verb's name (its ``NAME``), in the order help lists them. A command
#: that names its verb imports that verb's module alone (issue 19: importing all of them was
#: milliseconds of every command's start-up).
VERBS = {
    "validate": "reconciler.cli.validate",
    "plan": "reconciler.cli.plan",
    "show": "reconciler.cli.show",
    "drift": "reconciler.cli.drift",
    "apply": "reconciler.cli.apply",
    "sync": "reconciler.cli.sync",
    "force-unlock": "reconciler.cli.unlock",
    "export": "reconciler.cli.export",
    "lab": "providers.lab.cli",
    "completion": "reconciler.cli.completion",
}


def _verbs(verb=None):
    """The verbs' modules (or ``verb``'s alone)."""
    return [importlib.import_module(module) for name, module in VERBS.items() if verb is None or name == verb]


def build_parser(verb=None):
    """The whole command line: each verb adds its own parser. With ``verb``, only that verb's
    (what a command that names it parses the same: the verbs' parsers are independent)."""
    parents = Parents()
    parser = Parser(
        prog="syncprep",
        description="Plan and apply the preparation of an Entra Connect hybrid Exchange environment for third-party mailbox migration.",
        parents=[parents.top],
    )
    parser.add_argument("--version", action="version", version=f"syncprep {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=Parser)
    for module in _verbs(verb):
        module.add_parser(commands, parents).set_defaults(run=module.run)
    parser.set_defaults(whole_parser=parser)
    return parser


def verb_of(argv):
    """The verb ``argv`` names, when only the top level's own options, spelled whole, come
    before it; else None. Building every verb's parser took several milliseconds of each
    command's start-up (issue 19); help, ``--version``, a mistake or anything unusual before
    the verb is read by the whole parser, and ``completion`` needs the whole tree."""
    top = common_options("global_")
    takes_value = {option: action.nargs != 0 for action in top._actions for option in action.option_strings}
    names = set(VERBS) - {"completion"}
    argv = iter(argv)
    for token in argv:
        if token in takes_value:
            if takes_value[token]:
                next(argv, None)
        elif token.startswith("--") and token.partition("=")[0] in takes_value and takes_value[token.partition("=")[0]]:
            pass
        elif re.fullmatch(r"-v+", token):
            pass
        else:
            return token if token in names else None
    return None


#: While a command runs, the collector looks at new objects every this many allocations (Python's 700).
YOUNG = 50_000


@contextlib.contextmanager
def fewer_collections():
    """A command's start-up makes some hundred thousand objects that live as long as it does
    (modules, classes, functions) and next to no garbage in cycles: collecting every 700 new
    objects walked them again and again, about 3% of a small plan's CPU time (issue 19). The
    threshold Python had is put back when the command ends (a caller in the same process,
    as the tests are, gets it back); a lab that raised it further keeps it until then."""
    before = gc.get_threshold()
    if 0 < before[0] < YOUNG:
        gc.set_threshold(YOUNG, *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)


def main(argv=None):
    """Run the command; its exit code. A known error is one line on stderr (1); Ctrl-C and the
    stop signals give 130, whether or not that can still be said; an output closed early stops
    the command with 141, silently (:mod:`reconciler.cli.consoles`), where it was not
    interrupted, did not fail, and was not told to run to its end. A command told to run to its
    end (an approved apply, a sync) whose output failed otherwise (a full disk) ran to its end
    and says so once it has (one line on stderr), with 1 (130 if it was interrupted)."""
    with fewer_collections():
        return _main(argv)


def _main(argv):
    from reconciler.interrupts import stop_signals

    argv = sys.argv[1:] if argv is None else argv
    try:
        args = merge_common(build_parser(verb_of(argv)).parse_args(argv))
    except BrokenPipeError:  # --help or --version, into a closed output
        _flushed()
        return EXIT_OUTPUT_CLOSED
    except OSError as exc:  # --help, --version or a usage error, into an output that fails (a full disk)
        return _output_failed(exc)
    for stream in (sys.stdout, sys.stderr):
        tolerate_encoding(stream)
    no_color = args.no_color or bool(os.environ.get("NO_COLOR"))
    out = make_console(no_color)
    err = make_console(no_color, stderr=True)
    try:
        configure_logging(args)
        # SIGTERM, and Ctrl-Break on Windows, take Ctrl-C's road: the apply's brackets hold.
        with stop_signals():
            code = args.run(args, out, err)
    except ConfigError as exc:
        code = _fail(err, exc.problems)
    except ReconcilerError as exc:
        code = _fail(err, [str(exc)])
    except BrokenPipeError:
        code = EXIT_OUTPUT_CLOSED  # as SIGPIPE stops a command: nothing more to say, nor anyone to hear it
    except OSError as exc:
        if exc is out.failed:
            code = _output_failed(exc)  # the standard output (a full disk), said as for --help
            out.failed = None  # said
        else:
            # A path given on the command line that cannot be read or written.
            where = exc.filename if exc.filename is not None else "file"
            code = _fail(err, [f"{where}: {exc.strerror or exc}"])
    except KeyboardInterrupt:
        _say(err, "[yellow]interrupted[/yellow]")
        code = EXIT_INTERRUPTED
    if out.failed is not None:  # it ran to its end (keep_going) with what it printed dropped
        failed = _output_failed(out.failed)
        code = code if code == EXIT_INTERRUPTED else failed
    if not _flushed() and not out.keep_going and code not in (EXIT_ERROR, EXIT_INTERRUPTED):
        code = EXIT_OUTPUT_CLOSED  # what was written last never arrived
    return code


def _output_failed(exc):
    """An output that could not be written (not closed: ENOSPC, EIO): one line on stderr, if it
    takes it, and 1. What was not written is dropped, so that Python's flush at exit stays silent."""
    with contextlib.suppress(AttributeError, OSError, ValueError):
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stdout.fileno())
        os.close(null)
    with contextlib.suppress(OSError):
        make_console(True, stderr=True).print(error_line(f"cannot write the output: {exc.strerror or exc}"))
    return EXIT_ERROR


def _fail(err, problems):
    for problem in problems:
        _say(err, error_line(problem))
    return EXIT_ERROR


def _say(err, text):
    """Print on stderr, if it is still there: the exit code says the rest."""
    with contextlib.suppress(BrokenPipeError):
        err.print(text)


def _flushed():
    """Whether standard output and error took all that was written to them. One whose reader
    is gone is pointed at the null device, so that Python's own flush at exit stays silent.
    One closed before the start (``>&-``, pythonw: Python makes it None) held nothing of ours."""
    flushed = True
    for stream in (sys.stdout, sys.stderr):
        if stream is None:
            continue
        try:
            stream.flush()
        except BrokenPipeError:
            flushed = False
            with contextlib.suppress(OSError, ValueError):
                null = os.open(os.devnull, os.O_WRONLY)
                os.dup2(null, stream.fileno())
                os.close(null)
        except (OSError, ValueError):
            pass  # closed by the verb, or not a real stream: nothing of ours is waiting in it
    return flushed


def tolerate_encoding(stream):
    """A name the console's code page cannot encode (Windows PowerShell 5.1 redirected to a file:
    cp1252; a C locale: ASCII) is written as '?' rather than ending the command in a traceback.
    -o FILE writes UTF-8 whatever the console's encoding."""
    encoding = (getattr(stream, "encoding", None) or "").lower().replace("-", "")
    if encoding != "utf8" and hasattr(stream, "reconfigure"):
        stream.reconfigure(errors="replace")


def configure_logging(args):
    """Diagnostics as -v, --log-level, --log-file and SYNCPREP_LOG say (WARNING and stderr otherwise)."""
    from reconciler.cli import logs

    logs.configure(logs.level_for(args.verbose, args.log_level), log_file=args.log_file)
