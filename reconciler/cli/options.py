"""What every verb shares: exit codes, the parser class, the shared options, the consoles,
and opening a target with the endpoints the operator allowed.

Nothing heavy is imported here, so ``syncprep --help`` stays fast.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

from reconciler.errors import ReconcilerError, one_line  # noqa: F401 - one_line: the verbs import it from here

EXIT_OK, EXIT_ERROR, EXIT_CHANGES, EXIT_USERS, EXIT_INTERRUPTED = 0, 1, 2, 4, 130
#: 128 + SIGPIPE: what a shell reports for a command that a closed pipe stopped.
EXIT_OUTPUT_CLOSED = 141
ALLOW_ENV = "SYNCPREP_ALLOW_ENDPOINTS"  # providers.endpoints.ALLOW_ENV, without importing it for --help
CA_BUNDLE_ENV = "SYNCPREP_CA_BUNDLE"
LOG_ENV = "SYNCPREP_LOG"
LOG_LEVEL_ENV = "SYNCPREP_LOG_LEVEL"  # the older name, still read


#: The variables every verb reads.
COMMON_ENV = {
    "NO_COLOR": "set: plain output, as --no-color",
    LOG_ENV: f"debug, info, warning or error: the diagnostics' level, as -v/-vv ({LOG_LEVEL_ENV}, the older name, is still read)",
}
#: The variables a verb that reaches a target reads.
TARGET_ENV = {
    ALLOW_ENV: "endpoints credentials may go to (comma-separated URLs or hosts), as --allow-endpoint",
    CA_BUNDLE_ENV: "a CA bundle (PEM) to check TLS certificates against, as --ca-bundle",
    "SYNCPREP_GRAPH_TOKEN[_*]": "a Graph bearer token, for [target.graph] auth = \"token-env\" (the name token_env gives)",
    "SYNCPREP_WINRM_USERNAME[_*], SYNCPREP_WINRM_PASSWORD[_*]": "the WinRM account (the names username_env and password_env give)",
    "AZURE_*": "azure-identity's own variables, for the [target.graph] sign-in they serve (README: Real targets)",
}
SIGNING_ENV = {"SYNCPREP_PLAN_SIGNING_KEY": "the key saved plans are signed and checked with (HMAC-SHA256)"}
#: The exit codes of every verb, whatever it does.
STOPPED = {
    130: "interrupted (Ctrl-C, Ctrl-Break or SIGTERM), also when the output is gone as well",
    141: "the output was closed early (syncprep plan | head -1): stopped there; an approved apply or a sync runs to its end",
}


def epilog(exits, environment):
    """The end of a verb's help: its exit codes and the environment variables it reads."""
    lines = ["exit codes:"]
    lines += [f"  {code:<4}{meaning}" for code, meaning in sorted({**exits, **STOPPED}.items())]
    lines += ["", "environment:"]
    lines += [f"  {name}\n      {meaning}" for name, meaning in {**COMMON_ENV, **environment}.items()]
    return "\n".join(lines)


def verb_parser(commands, name, *, parents, help, exits, environment=None, description=None):
    """A verb's parser, whose help ends with its exit codes and the variables it reads."""
    return commands.add_parser(
        name,
        parents=parents,
        help=help,
        description=description or help[:1].upper() + help[1:] + ".",
        epilog=epilog(exits, environment or {}),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


class Parser(argparse.ArgumentParser):
    """Usage errors exit 1, not argparse's 2: 2 means "changes" to a CI job. ``--help`` and
    ``--version`` into a closed output end as every command does (141, in ``command.main``),
    and into an output that fails otherwise (a full disk) as an error (1, one line on stderr),
    where argparse would pass over the failed write and exit 0."""

    def error(self, message):
        with contextlib.suppress(BrokenPipeError):  # the exit code says it
            self.print_usage(sys.stderr)
            self._print_message(f"{self.prog}: error: {message}\n", sys.stderr)
        self.exit(EXIT_ERROR)

    def _print_message(self, message, file=None):
        if message:
            file = file or sys.stderr
            if file is None:
                return  # no stream to say it on (>&- 2>&-, pythonw), as argparse passes over it
            file.write(message)
            file.flush()


def common_options(prefix=""):
    """Options every verb takes: ``--no-color``, ``-v``, ``--log-file`` (and the older ``--log-level``).

    The top-level parser has them too, under ``prefix`` ("global_"), and :func:`merge_common`
    folds them in: a subparser's defaults would otherwise overwrite what was given before the
    verb (``syncprep --no-color plan`` meant no colour only after the verb). So no default here.
    """
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--no-color", dest=prefix + "no_color", action="store_true", default=argparse.SUPPRESS, help="plain output (NO_COLOR is honoured too)")
    common.add_argument(
        "-v",
        "--verbose",
        dest=prefix + "verbose",
        action="count",
        default=argparse.SUPPRESS,
        help=f"diagnostics, scrubbed of credentials: -v info, -vv debug (also {LOG_ENV}=debug|info|warning|error)",
    )
    common.add_argument(
        "--log-file", dest=prefix + "log_file", metavar="FILE", default=argparse.SUPPRESS, help="write diagnostics to FILE (created 0600) instead of stderr"
    )
    common.add_argument(
        "--log-level",
        dest=prefix + "log_level",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        default=argparse.SUPPRESS,
        type=str.upper,
        help=f"the diagnostics' level, as -v/-vv say it (also {LOG_LEVEL_ENV}, the older name of {LOG_ENV})",
    )
    return common


def merge_common(args):
    """The common options given before the verb count as given after it."""
    args.no_color = bool(getattr(args, "no_color", False) or getattr(args, "global_no_color", False))
    args.verbose = getattr(args, "verbose", 0) + getattr(args, "global_verbose", 0)
    args.log_file = getattr(args, "log_file", None) or getattr(args, "global_log_file", None)
    args.log_level = getattr(args, "log_level", None) or getattr(args, "global_log_level", None)
    return args


def lab_options():
    lab_option = argparse.ArgumentParser(add_help=False)
    lab_option.add_argument("--lab", metavar="FILE", help="the lab file (default .syncprep/lab.json; created on first use)")
    return lab_option


def target_options():
    """Where credentials may go is the operator's say, never the desired-state file's."""
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument(
        "--allow-endpoint",
        action="append",
        default=[],
        metavar="URL",
        help=f"allow sending credentials to this endpoint (URL or host; repeatable; also {ALLOW_ENV}, comma-separated)",
    )
    options.add_argument(
        "--no-cert-validation", action="store_true", help="accept cert_validation = false of the desired-state file for a host that is not loopback"
    )
    options.add_argument("--ca-bundle", metavar="PEM", help=f"check TLS certificates against this CA bundle (also {CA_BUNDLE_ENV})")
    options.add_argument(
        "--state",
        choices=["local", "server", "azureblob"],
        help="where the lock and journal live (overrides [state] backend; default: local for the lab, server for a real target)",
    )
    return options


class Parents:
    """The shared option groups, made once per parser and handed to each verb's ``add_parser``."""

    def __init__(self):
        self.common = common_options()
        #: The same options on the top-level parser (see :func:`merge_common`).
        self.top = common_options("global_")
        self.lab = lab_options()
        self.target = target_options()

    @property
    def for_target(self):
        """A verb that reaches a target (or the lab) takes all three."""
        return [self.common, self.lab, self.target]


def scrub(text):
    from reconciler.redact import scrub as _scrub

    return _scrub(text)


def make_console(no_color=False, stderr=False):
    """--no-color and NO_COLOR mean plain text: no colour and no other escape codes either.
    No console replaces emoji codes: a name such as "ops:fire:team" prints as written.
    A closed output raises ``BrokenPipeError`` (:mod:`reconciler.cli.consoles`)."""
    from reconciler.cli.consoles import Console

    if no_color:
        return Console(color_system=None, no_color=True, highlight=False, emoji=False, stderr=stderr, soft_wrap=True)
    return Console(highlight=False, emoji=False, stderr=stderr, soft_wrap=True)


def run_to_the_end(*consoles):
    """From here on a closed output stops nothing: the command runs to its end (an approved
    apply: its brackets, the read-back, ``--report``), and what it prints is dropped."""
    for console in consoles:
        console.keep_going = True


def add_output_option(parser, what):
    parser.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help=f"write {what} to FILE in UTF-8 (created 0600, atomically) instead of standard output; "
        "for Windows PowerShell 5.1, whose '>' does not write UTF-8",
    )


def check_output(args, inputs):
    """Refuse ``-o FILE`` that is a symbolic link or one of the command's own files, before any work."""
    if getattr(args, "output", None):
        from reconciler.files import refuse_inputs, refuse_symlink

        refuse_symlink(args.output)
        refuse_inputs(args.output, inputs)


class Output:
    """``with Output(args, out, err, inputs) as console:`` — the verb renders to ``console``:
    standard output, or for ``-o FILE`` plain text collected and written to FILE in UTF-8."""

    def __init__(self, args, out, err, inputs):
        self.path = getattr(args, "output", None)
        self.out, self.err, self.inputs = out, err, inputs
        self.buffer = None

    def __enter__(self):
        if not self.path:
            return self.out
        import io

        from rich.console import Console

        self.buffer = io.StringIO()
        return Console(file=self.buffer, color_system=None, no_color=True, highlight=False, emoji=False, soft_wrap=True, width=120)

    def __exit__(self, kind, value, traceback):
        if self.path and kind is None:
            from reconciler.files import write_private

            write_private(self.path, self.buffer.getvalue(), self.inputs)
            self.err.print(f"Wrote {escape(self.path)} (UTF-8)")
        return False


def env_line(name, value, platform=None):
    """How to set a variable in the shell syncprep runs in: PowerShell on Windows, sh elsewhere."""
    if (platform or sys.platform) == "win32":
        return f"$env:{name} = '{value}'"
    return f"export {name}={value}"


def error_line(text):
    """``error: TEXT`` for the console: scrubbed of credentials, one line, markup-escaped."""
    return f"[red]error:[/red] {escape(one_line(scrub(text)))}"


def escape(text):
    from rich.markup import escape as _escape

    return _escape(text)


def open_target(desired, args, err=None):
    """The target of ``desired``, with the endpoints the operator allowed (and warnings on stderr)."""
    from providers.factory import open_target as _open_target

    from providers.statebackends import check

    override = getattr(args, "state", None)
    check(desired.state, desired.target.kind, override, desired.source)  # before anything is read or sent
    allowance = _allowance(args)
    target = _open_target(desired.target, lab_path=getattr(args, "lab", None), source=desired.source, allowance=allowance)

    def open_state():
        # Opened when a verb first needs the lock or the journal (export never does).
        from providers.statebackends import open_state as _open_state

        return _open_state(desired.state, target, desired.target.kind, override, allowance, desired.source)

    target.open_state = open_state
    for warning in allowance.warnings:
        (err or make_console(True, stderr=True)).print(f"[yellow]warning: {escape(warning)}[/yellow]")
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


def open_named_or_lab(path, args, err):
    """The target of the desired-state file ``path``, or the lab when no file is given."""
    if path:
        from reconciler.loader import load_desired

        return open_target(load_desired(path), args, err)
    from providers.lab.provider import open_lab_target

    if getattr(args, "state", None) not in (None, "local"):
        raise ReconcilerError(f"--state {args.state}: name the desired-state file whose [state] says where (the lab alone keeps its state locally)")
    return open_lab_target(args.lab)


def scripts_of(plan, target):
    """The PowerShell each Entra Connect step of ``plan`` runs on ``target`` (none for the lab)."""
    scripts = {}
    for step in plan.steps:
        if step.provider == "entra-connect":
            text = target.server.scripts_for(step.operation)
            if text:
                scripts[step.id] = text
    return scripts


def lab_files(path):
    """The lab file and its change log (beside it): inputs no output may replace."""
    if not path:
        return {"the lab file": None}
    from providers.lab.store import changes_path

    return {"the lab file": path, "the lab file's change log": str(changes_path(path))}


def report_inputs(args, target=None):
    """The files a ``--report`` must never replace: the command's inputs and outputs."""
    return {
        "the desired-state file": getattr(args, "desired", None) or args.file,
        "the plan file": args.file,
        "the plan written by -out": getattr(args, "out", None),
        **lab_files(getattr(target, "path", None) or getattr(args, "lab", None)),
    }
