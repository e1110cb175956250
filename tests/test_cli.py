"""The command line, end to end on the lab, as a user runs it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import EXAMPLE, ROOT, UPGRADE_SAFE
from providers.lab import store


@pytest.mark.parametrize("path", [EXAMPLE, UPGRADE_SAFE], ids=["example", "upgrade-safe"])
def test_quick_start_plan_apply_plan(cli, path):
    code, out, _ = cli("plan", path, "--detailed-exitcode")
    assert code == 2
    assert "Plan:" in out and "0 irreversible" in out
    code, out, err = cli("apply", path, "--auto-approve")
    assert code == 4, err  # 4: user07 (no usage location) and user20 (no unit) end without a licence
    assert "Apply complete" in out
    assert "mailboxes present" in out
    lab = store.load(".syncprep/lab.json")
    assert lab.mailbox_state(lab.cloud_user("contractor01@contoso.com")) == "present"
    code, out, _ = cli("plan", path, "--detailed-exitcode")
    assert code == 0
    assert "No changes." in out


def test_the_plan_reads_in_the_articles_order(cli):
    _code, out, _ = cli("plan", EXAMPLE)
    markers = [
        "Pause the sync scheduler",
        "Disable the stock rule before copying it",
        "Copy the stock rule at temporary precedence 212",
        "200 is held by 'Out to AAD - User Join'",
        "Delete the original stock rule",
        "Give the copy the original's precedence 108",
        "Resume the sync scheduler",
        "Run a full (Initial) sync cycle",
        "Remove ENTERPRISEPACK from 3 user(s)",
        "Assign ENTERPRISEPACK to 19 user(s)",
        "Wait for the 19 Exchange Online mailbox(es)",
    ]
    positions = [out.index(m) for m in markers]
    assert positions == sorted(positions)
    assert "now:   flows from 'In from AD - User Exchange' (108" in out


def test_plan_json_is_versioned_and_complete(cli):
    code, out, _ = cli("plan", EXAMPLE, "--json")
    assert code == 0
    data = json.loads(out)
    assert data["format_version"] == "1.0" and data["has_changes"]
    assert data["steps"][0]["id"] == "scheduler.pause"
    copy = next(s for s in data["steps"] if s["id"].endswith("User Exchange].copy"))
    assert copy["operation"]["type"] == "CreateRule" and copy["impact"] == "reversible"
    assert any(n["code"] == "license-shortage" for n in data["notices"])


def test_apply_without_a_terminal_or_approval_changes_nothing(cli, monkeypatch):
    cli("lab", "init")
    before = Path(".syncprep/lab.json").read_text()
    monkeypatch.setattr(sys, "stdin", open(os.devnull))
    code, _out, err = cli("apply", EXAMPLE)
    assert code == 1
    assert "needs confirmation" in err and "--auto-approve" in err
    assert Path(".syncprep/lab.json").read_text() == before


def test_validate_reports_every_problem_without_a_traceback(cli, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[[rules]]\nname = "x"\nkind = "custom"\nprecedence = 5000000000\nsource_object_type = "user"\n'
                   '  [[rules.flows]]\n  destination = "a"\n  flow_type = "Direct"\n  source = "b"\n'
                   '[[licenses]]\nsku = "E3"\nusers = ["nope"]\n')
    code, out, err = cli("validate", bad, EXAMPLE)
    assert code == 1
    lines = err.strip().splitlines()
    assert lines == [
        f"error: {bad}:4: rules[0].precedence: precedence 5000000000 is out of range (0 to 2147483647)",
        f"error: {bad}:12: licenses[0].users[0]: 'nope' is not a valid user principal name (name@domain.tld)",
    ]
    assert "example.toml: valid" in out


def test_plan_errors_are_one_line(cli, tmp_path):
    desired = tmp_path / "clash.toml"
    desired.write_text('[[rules]]\nname = "Mine"\nkind = "custom"\nsource_object_type = "user"\nprecedence = 108\n'
                       '  [[rules.flows]]\n  destination = "msExchMailboxGuid"\n  flow_type = "Expression"\n  expression = "AuthoritativeNull"\n')
    code, _out, err = cli("plan", desired)
    assert code == 1
    assert err.strip() == "error: rule 'Mine': precedence 108 is held by 'In from AD - User Exchange'; precedence is unique across all rules (domain-facts A4)"


def test_lab_commands_act_behind_the_tools_back(cli):
    assert cli("lab", "init", "--users", "30")[0] == 0
    code, out, _ = cli("lab", "show", "--json")
    summary = json.loads(out)
    assert len([u for u in summary["tenant"]["users"] if u["upn"].startswith("user")]) == 30
    assert cli("apply", EXAMPLE, "--auto-approve")[0] == 4  # 4: user07 (no usage location) and user20 (no unit) end without a licence

    cli("lab", "scheduler", "pause")
    code, out, _ = cli("plan", EXAMPLE, "--detailed-exitcode")
    assert code == 2 and "the sync scheduler is off" in out and "Resume the sync scheduler" in out
    cli("lab", "scheduler", "resume")

    code, out, _ = cli("lab", "upgrade")
    assert "stock rules re-created: 'In from AD - User Exchange'" in out
    code, out, _ = cli("plan", EXAMPLE, "--detailed-exitcode")
    assert code == 2 and "Delete the stock rule again" in out

    cli("lab", "sync", "--policy", "Delta", "--no-wait")
    code, out, _ = cli("plan", EXAMPLE)
    assert "a sync cycle is running now" in out and "apply waits for it" in out
    code, out, _ = cli("apply", EXAMPLE, "--auto-approve")
    assert code == 4 and "a sync cycle is running: waiting for it to finish" in out
    assert cli("plan", EXAMPLE, "--detailed-exitcode")[0] == 0


def test_lab_init_refuses_to_overwrite_and_a_corrupt_lab_is_one_line(cli):
    cli("lab", "init")
    code, _out, err = cli("lab", "init")
    assert code == 1 and "--force" in err
    Path(".syncprep/lab.json").write_text("{oops")
    code, _out, err = cli("plan", EXAMPLE)
    assert code == 1 and err.count("\n") == 1 and "invalid JSON" in err


def test_no_color_means_no_escape_codes(cli, monkeypatch):
    monkeypatch.setenv("FORCE_COLOR", "1")
    _code, coloured, _ = cli("plan", EXAMPLE)
    assert "\x1b[" in coloured
    _code, plain, _ = cli("plan", EXAMPLE, "--no-color")
    assert "\x1b[" not in plain
    monkeypatch.setenv("NO_COLOR", "1")
    _code, plain, _ = cli("plan", EXAMPLE)
    assert "\x1b[" not in plain


def test_help_loads_neither_msgraph_nor_pypsrp():
    code = (
        "import sys\n"
        "from reconciler.cli.command import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted({m.split('.')[0] for m in sys.modules if m.split('.')[0] in ('msgraph', 'pypsrp', 'azure', 'kiota_abstractions', 'psrpcore', 'deepdiff')}))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_the_installed_command_runs(tmp_path):
    script = Path(sys.executable).parent / "syncprep"
    result = subprocess.run([str(script), "plan", str(EXAMPLE), "--detailed-exitcode", "--no-color"], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert (tmp_path / ".syncprep" / "lab.json").exists()


def test_a_usage_error_is_not_mistaken_for_changes(cli):
    with pytest.raises(SystemExit) as caught:
        cli("plan", EXAMPLE, "--detailed-exit-code")
    assert caught.value.code == 1
