"""``-o FILE`` for output meant for files (plan --json, show --markdown, drift --json): UTF-8,
written whole, 0600, never over the command's own inputs (issue 17: Windows PowerShell 5.1's
redirection does not write UTF-8)."""

import json
import os
from pathlib import Path

import pytest

from conftest import EXAMPLE


def test_plan_json_to_a_file_is_the_same_json_in_utf8(cli, tmp_path):
    _code, shown, _ = cli("plan", EXAMPLE, "--json")
    code, out, err = cli("plan", EXAMPLE, "--json", "-o", "plan-view.json")
    assert code == 0 and out == "" and "Wrote plan-view.json (UTF-8)" in err
    written = Path("plan-view.json").read_bytes()
    assert not written.startswith(b"\xef\xbb\xbf")
    assert json.loads(written.decode("utf-8"))["steps"] == json.loads(shown)["steps"]
    assert os.stat("plan-view.json").st_mode & 0o777 == 0o600


def test_show_markdown_and_drift_json_to_files(cli):
    cli("plan", EXAMPLE, "-out", "plan.json")
    _code, shown, _ = cli("show", "plan.json", "--markdown")
    code, out, _err = cli("show", "plan.json", "--markdown", "--output", "comment.md")
    assert code == 0 and out == ""
    assert Path("comment.md").read_text(encoding="utf-8") == shown
    code, out, _err = cli("drift", EXAMPLE, "--json", "-o", "drift.json")
    assert code == 2 and out == ""
    report = json.loads(Path("drift.json").read_text(encoding="utf-8"))
    assert report["format_version"] == 1 and report["drift"]


def test_text_output_to_a_file_is_plain(cli, monkeypatch):
    monkeypatch.setenv("FORCE_COLOR", "1")
    cli("plan", EXAMPLE, "-o", "plan.txt")
    text = Path("plan.txt").read_text(encoding="utf-8")
    assert "Pause the sync scheduler" in text and "\x1b[" not in text


@pytest.mark.parametrize(
    "args, what",
    [
        (("plan", "{example}", "--json", "-o", "{example}"), "the desired-state file"),
        (("drift", "{example}", "--json", "-o", "{example}"), "the desired-state file"),
        (("show", "plan.json", "--json", "-o", "plan.json"), "the plan file"),
        (("plan", "{example}", "--json", "-o", "same.json", "-out", "same.json"), "-o and -out name the same file"),
    ],
)
def test_an_output_never_replaces_an_input(cli, args, what, tmp_path):
    example = tmp_path / "desired.toml"
    example.write_bytes(EXAMPLE.read_bytes())
    cli("plan", example, "-out", "plan.json")
    before = {p: p.read_bytes() for p in (example, Path("plan.json"))}
    code, _out, err = cli(*[a.format(example=example) for a in args])
    assert code == 1 and what in err and len(err.splitlines()) == 1
    assert {p: p.read_bytes() for p in before} == before
