"""Start-up (issue 19): a command builds only its own verb's parser, and reads its arguments
exactly as the whole parser does; help, --version and anything unusual get the whole parser."""

import pytest

from reconciler.cli.command import build_parser, merge_common, verb_of

SAME_AS_WHOLE = [
    ["plan", "x.toml"],
    ["--no-color", "plan", "x.toml", "--json", "-o", "view.json"],
    ["-vv", "apply", "x.toml", "--auto-approve", "-v"],
    ["--log-file", "plan", "plan", "x.toml"],  # a value that is a verb's name
    ["--log-level=info", "validate", "a.toml", "b.toml"],
    ["--log-file=run.log", "-v", "force-unlock", "abc"],
    ["lab", "init", "--users", "5"],
    ["drift", "x.toml", "--markdown"],
]


def _read(parser, argv):
    values = vars(merge_common(parser.parse_args(argv)))
    values.pop("whole_parser")
    return values


@pytest.mark.parametrize("argv", SAME_AS_WHOLE, ids=" ".join)
def test_a_command_is_read_by_its_verbs_parser_as_by_the_whole_parser(argv):
    verb = verb_of(argv)
    assert verb is not None and verb in argv
    assert _read(build_parser(verb), argv) == _read(build_parser(), argv)


@pytest.mark.parametrize(
    "argv",
    [[], ["-h"], ["--version"], ["completion", "bash"], ["--log-f", "a.log", "plan", "x"], ["nonsense", "x"], ["--no-color"], ["-x", "plan"]],
    ids=lambda argv: " ".join(argv) or "(none)",
)
def test_help_version_completion_and_the_unusual_get_the_whole_parser(argv):
    assert verb_of(argv) is None


def test_a_usage_error_in_a_verb_reads_the_same(capsys):
    messages = []
    for parser in (build_parser("plan"), build_parser()):
        with pytest.raises(SystemExit) as exit_:
            parser.parse_args(["plan", "--nonsense"])
        messages.append((exit_.value.code, capsys.readouterr().err))
    assert messages[0] == messages[1] and messages[0][0] == 1
    assert messages[0][1].startswith("usage: syncprep plan [-h]")
