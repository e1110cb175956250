"""Every verb's help lists its exit codes and the variables it reads; --version; completion
scripts for bash and PowerShell generated from the parser (issue 17, Conventions)."""

import argparse
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT
from reconciler import __version__
from reconciler.cli.command import build_parser
from reconciler.cli.completion import bash_script, command_tree, powershell_script
from reconciler.cli.options import env_line


def verbs(parser=None, path=()):
    parser = parser or build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*path, name), sub
                yield from verbs(sub, (*path, name))


VERBS = list(verbs())


@pytest.mark.parametrize("path, parser", VERBS, ids=[" ".join(p) for p, _ in VERBS])
def test_every_verbs_help_lists_exit_codes_and_environment(path, parser):
    text = parser.format_help()
    assert "exit codes:" in text and "  130 interrupted" in text and "  0   " in text
    assert "environment:" in text and "NO_COLOR" in text and "SYNCPREP_LOG" in text


def _variables_read(module_path):
    """The SYNCPREP_* and AZURE_* names a verb's own module (and the options it takes) read."""
    return set(re.findall(r"\b(SYNCPREP_[A-Z_]+[A-Z]|AZURE_[A-Z_]+[A-Z])\b", Path(module_path).read_text()))


@pytest.mark.parametrize(
    "verb, module",
    [
        (("plan",), "reconciler/cli/plan.py"),
        (("apply",), "reconciler/cli/apply.py"),
        (("drift",), "reconciler/cli/drift.py"),
        (("export",), "reconciler/cli/export.py"),
        (("force-unlock",), "reconciler/cli/unlock.py"),
        (("sync",), "reconciler/cli/sync.py"),
        (("lab", "serve"), "providers/lab/cli.py"),
    ],
)
def test_the_variables_a_verb_reads_are_in_its_help(verb, module):
    parser = dict(VERBS)[verb]
    text = parser.format_help()
    target_verb = any(a.option_strings == ["--allow-endpoint"] for a in parser._actions)
    wanted = _variables_read(ROOT / module)
    if target_verb:
        wanted |= {"SYNCPREP_ALLOW_ENDPOINTS", "SYNCPREP_CA_BUNDLE", "SYNCPREP_GRAPH_TOKEN", "SYNCPREP_WINRM_PASSWORD"}
    missing = [name for name in wanted if name not in text]
    assert not missing, f"{' '.join(verb)} reads {missing} but its help does not say so"


def test_version_prints_the_version(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--version"])
    assert capsys.readouterr().out == f"syncprep {__version__}\n"


def test_the_completion_tree_is_the_parsers():
    tree = command_tree(build_parser())
    assert set(tree) == {""} | {" ".join(p) for p, _ in VERBS}
    commands, options, values = tree["lab sync"]
    assert "--policy" in options and values["--policy"] == ("Delta", "Initial")
    assert tree["plan"][2]["--report"] is None  # a path: completed as files
    assert tree[""][0][:2] == ["validate", "plan"]


BASH = shutil.which("bash")


def complete(script, words):
    """What bash completes for ``words`` (the last one being typed)."""
    array = " ".join(f"'{w}'" for w in words)
    program = f'{script}\nCOMP_WORDS=({array}); COMP_CWORD={len(words) - 1}; _syncprep; printf "%s\\n" "${{COMPREPLY[@]}}"'
    done = subprocess.run([BASH, "--norc", "--noprofile", "-c", program], capture_output=True, text=True, check=True)
    return done.stdout.split()


@pytest.mark.skipif(BASH is None, reason="no bash")
@pytest.mark.parametrize(
    "words, expected",
    [
        (["syncprep", "pl"], ["plan"]),
        (["syncprep", "--no-color", "pl"], ["plan"]),
        (["syncprep", "lab", ""], ["init", "show", "scheduler", "sync", "upgrade", "advance", "serve"]),
        (["syncprep", "lab", "sync", "--policy", ""], ["Delta", "Initial"]),
        (["syncprep", "-v", "--log-level", "D"], ["DEBUG"]),
        (["syncprep", "plan", "--detailed"], ["--detailed-exitcode"]),
        (["syncprep", "drift", "x.toml", "--ma"], ["--markdown", "--mask-users"]),
        (["syncprep", "completion", ""], ["bash", "powershell"]),
    ],
)
def test_bash_completion_completes_verbs_options_and_choices(words, expected, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no files to offer
    got = complete(bash_script(command_tree(build_parser())), words)
    assert got == expected


@pytest.mark.skipif(BASH is None, reason="no bash")
def test_bash_completion_offers_files_for_a_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("desired.toml").write_text("")
    script = bash_script(command_tree(build_parser()))
    assert complete(script, ["syncprep", "plan", "de"]) == ["desired.toml"]
    assert complete(script, ["syncprep", "plan", "x.toml", "--report", "de"]) == ["desired.toml"]


def test_the_completion_verb_prints_the_scripts(cli):
    code, out, _ = cli("completion", "bash")
    assert code == 0 and out.startswith("# bash completion for syncprep") and "complete -o filenames -F _syncprep syncprep" in out
    code, out, _ = cli("completion", "powershell")
    assert code == 0 and "Register-ArgumentCompleter -Native -CommandName syncprep, syncprep.exe" in out


def test_the_powershell_script_carries_the_whole_tree():
    """Tested by content only: PowerShell cannot run here (README: tested by logic on Windows)."""
    tree = command_tree(build_parser())
    script = powershell_script(tree)
    for path, (commands, options, values) in tree.items():
        assert f"'{path}' = @(" in script
        for option in options:
            assert f"'{option}'" in script
        for option, kind in values.items():
            if kind:
                assert f"'{f'{path} {option}'.strip()}' = @({', '.join(repr(k) for k in kind)})" in script
    assert script.count("{") == script.count("}") and script.count("(") == script.count(")")


def test_lab_serve_prints_the_line_for_the_shell_it_runs_in():
    assert env_line("SYNCPREP_ALLOW_ENDPOINTS", "http://127.0.0.1:1", platform="linux") == "export SYNCPREP_ALLOW_ENDPOINTS=http://127.0.0.1:1"
    assert env_line("SYNCPREP_ALLOW_ENDPOINTS", "http://127.0.0.1:1", platform="win32") == "$env:SYNCPREP_ALLOW_ENDPOINTS = 'http://127.0.0.1:1'"
