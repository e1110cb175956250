"""``plan`` on the default lab imports only what it uses (issue 19: its start-up was most of its
time). Each module named here cost milliseconds of every plan and is needed only elsewhere
(an error to explain, a lab to write, another verb)."""

import subprocess
import sys

from conftest import EXAMPLE, ROOT

#: Not imported by a plan of the default lab, and why not.
NOT_IMPORTED = {
    "cattrs": "the lab's small parts are structured by the quick road (providers.lab.store_structure)",
    **dict.fromkeys(
        ["reconciler.cli.apply", "reconciler.cli.completion", "reconciler.cli.drift", "reconciler.cli.export", "reconciler.cli.show", "reconciler.cli.sync", "reconciler.cli.unlock", "reconciler.cli.validate", "providers.lab.cli"],
        "a command imports its own verb's module (reconciler.cli.command.VERBS)",
    ),
}


def test_a_plan_of_the_default_lab_imports_only_what_it_uses(tmp_path):
    lab = tmp_path / "lab.json"
    made = subprocess.run([sys.executable, "-m", "reconciler.cli", "lab", "init", "--lab", str(lab)], capture_output=True, text=True, cwd=ROOT)
    assert made.returncode == 0, made.stderr
    code = (
        "import contextlib, io, sys\n"
        "from reconciler.cli.command import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    assert main(['plan', {str(EXAMPLE)!r}, '--lab', {str(lab)!r}]) == 0\n"
        "from reconciler import redact\n"
        "assert redact._compiled.cache_info().currsize == 0, 'the credential patterns were compiled: nothing was scrubbed'\n"
        f"print(sorted(name for name in {sorted(NOT_IMPORTED)!r} if name in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    imported = result.stdout.strip().splitlines()[-1]
    assert imported == "[]", f"imported {imported}; not needed: {NOT_IMPORTED}"


def test_each_verb_is_found_by_its_name():
    import importlib

    from reconciler.cli.command import VERBS, build_parser

    assert {name: importlib.import_module(module).NAME for name, module in VERBS.items()} == {name: name for name in VERBS}
    commands = next(a for a in build_parser()._actions if a.dest == "command")
    assert list(commands.choices) == list(VERBS)


def test_a_command_collects_less_often_and_puts_the_threshold_back(monkeypatch, capsys):
    import gc

    from reconciler.cli import command, show

    seen = []
    monkeypatch.setattr(show, "run", lambda args, out, err: seen.append(gc.get_threshold()[0]) or 0)
    before = gc.get_threshold()
    gc.set_threshold(700, *before[1:])  # Python's own (a big lab read in this process may have raised it)
    try:
        assert command.main(["show", "nonexistent-plan.json"]) == 0
        assert seen == [command.YOUNG] and gc.get_threshold() == (700, *before[1:])
    finally:
        gc.set_threshold(*before)
