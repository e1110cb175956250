"""Files that hold users (issue 15): 0600, atomic, never through a symlink, never over an input."""

import json
import os
from pathlib import Path

import pytest

from conftest import EXAMPLE
from reconciler.journal import TargetLock, last_interrupted


def mode(path):
    return Path(path).stat().st_mode & 0o777


def test_plans_journal_and_lock_are_readable_by_their_owner_only(cli):
    os.umask(0o022)
    assert cli("plan", EXAMPLE, "-out", "plan.json")[0] == 0
    assert mode("plan.json") == 0o600
    assert cli("apply", "plan.json", "--desired", EXAMPLE, "--auto-approve")[0] == 4  # user07 and user20 end without a licence
    (journal,) = Path(".syncprep").glob("*.journal")
    assert mode(journal) == 0o600
    with TargetLock(Path(".syncprep") / "x.lock", "test"):
        assert mode(Path(".syncprep") / "x.lock") == 0o600
    assert cli("export", "-o", "current.toml")[0] == 0
    assert mode("current.toml") == 0o600


def test_out_refuses_to_overwrite_its_inputs(cli, tmp_path):
    desired = tmp_path / "mine.toml"
    desired.write_text(EXAMPLE.read_text())
    before = desired.read_bytes()
    code, _out, err = cli("plan", desired, "-out", desired)
    assert code == 1 and "is the desired-state file this command reads" in err
    code, _out, err = cli("plan", desired, "-out", tmp_path / "." / "mine.toml")
    assert code == 1
    assert desired.read_bytes() == before
    cli("lab", "init")
    lab = Path(".syncprep/lab.json").read_bytes()
    code, _out, err = cli("export", "-o", ".syncprep/lab.json")
    assert code == 1 and "is the lab file this command reads" in err
    code, _out, err = cli("export", "--from", desired, "-o", desired)
    assert code == 1 and "is the desired-state file" in err
    code, _out, err = cli("plan", desired, "-out", ".syncprep/lab.json")
    assert code == 1 and "is the lab file" in err
    assert Path(".syncprep/lab.json").read_bytes() == lab and desired.read_bytes() == before


def test_outputs_and_the_journal_never_write_through_a_symlink(cli, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    Path("plan.json").symlink_to(victim)
    code, _out, err = cli("plan", EXAMPLE, "-out", "plan.json")
    assert code == 1 and "is a symbolic link" in err
    Path("current.toml").symlink_to(victim)
    code, _out, err = cli("export", "-o", "current.toml")
    assert code == 1 and "is a symbolic link" in err
    cli("lab", "init")
    from reconciler.journal import target_slug
    from providers.lab.provider import open_lab_target

    journal = Path(".syncprep") / f"{target_slug(open_lab_target('.syncprep/lab.json').key)}.journal"
    journal.symlink_to(victim)
    code, _out, err = cli("apply", EXAMPLE, "--auto-approve")
    assert code == 1 and "is a symbolic link" in err
    assert victim.read_text() == "precious"


def test_a_plan_is_written_whole_or_not_at_all(cli, monkeypatch):
    cli("plan", EXAMPLE, "-out", "plan.json")
    before = Path("plan.json").read_bytes()
    cli("lab", "scheduler", "pause")

    def crash(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", crash)
    code, _out, _err = cli("plan", EXAMPLE, "-out", "plan.json")
    assert code == 1
    assert Path("plan.json").read_bytes() == before
    assert [p.name for p in Path(".").iterdir() if p.name.endswith(".tmp")] == []


def test_a_journal_line_that_is_json_but_not_an_object_is_skipped(cli):
    cli("lab", "init")
    from reconciler.journal import target_slug
    from providers.lab.provider import open_lab_target

    journal = Path(".syncprep") / f"{target_slug(open_lab_target('.syncprep/lab.json').key)}.journal"
    journal.write_text('[1, 2]\n"text"\n' + json.dumps({"event": "run-start", "run": "r1", "time": "t", "command": "apply"}) + "\n42\n")
    assert last_interrupted(journal).run == "r1"
    for command in (("plan", EXAMPLE), ("drift", EXAMPLE), ("apply", EXAMPLE, "--auto-approve")):
        code, _out, err = cli(*command)
        assert "Traceback" not in err and code in (0, 2, 4), (command, err)
