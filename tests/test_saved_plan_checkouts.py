"""A saved plan names its desired-state file by content and by a path relative to the repository
(or to the plan's folder outside any repository), so a plan made in one checkout applies in another."""

import json
import shutil

import pytest

from conftest import EXAMPLE
from reconciler import savedplan
from reconciler.errors import ReconcilerError


def _checkout(root, name):
    repo = root / name
    (repo / "desired-state").mkdir(parents=True)
    (repo / ".git").mkdir()
    shutil.copy(EXAMPLE, repo / "desired-state" / "site.toml")
    return repo


def test_a_plan_made_in_one_checkout_applies_in_another(cli, tmp_path, monkeypatch):
    lab = tmp_path / "lab.json"
    first, second = _checkout(tmp_path, "one"), _checkout(tmp_path, "two")
    monkeypatch.chdir(first)
    code, _out, err = cli("plan", "desired-state/site.toml", "-out", tmp_path / "plan.json", "--lab", lab)
    assert code == 0, err
    data = json.loads((tmp_path / "plan.json").read_text())
    assert data["desired_ref"] == {"base": "repository", "path": "desired-state/site.toml"}
    monkeypatch.chdir(second)
    code, out, err = cli("apply", tmp_path / "plan.json", "--auto-approve", "--lab", lab)
    assert code == 4, out[-2000:] + err  # 4: user07 and user20 end without a licence
    assert "Apply complete" in out


def test_the_other_checkouts_file_must_be_the_same_by_content(cli, tmp_path, monkeypatch):
    lab = tmp_path / "lab.json"
    first, second = _checkout(tmp_path, "one"), _checkout(tmp_path, "two")
    monkeypatch.chdir(first)
    assert cli("plan", "desired-state/site.toml", "-out", tmp_path / "plan.json", "--lab", lab)[0] == 0
    changed = second / "desired-state" / "site.toml"
    changed.write_text(changed.read_text().replace("relicense_without_mailbox = true", "relicense_without_mailbox = false"))
    monkeypatch.chdir(second)
    code, _out, err = cli("apply", tmp_path / "plan.json", "--auto-approve", "--lab", lab)
    assert code == 1 and "as it is now (its SHA-256 differs)" in err and "nothing was changed" in err


def test_outside_a_repository_the_path_is_relative_to_the_plan(cli, tmp_path, monkeypatch):
    lab = tmp_path / "lab.json"
    for name in ("here", "there"):
        (tmp_path / name).mkdir()
        shutil.copy(EXAMPLE, tmp_path / name / "site.toml")
    monkeypatch.chdir(tmp_path / "here")
    assert cli("plan", "site.toml", "-out", "plan.json", "--lab", lab)[0] == 0
    assert json.loads((tmp_path / "here" / "plan.json").read_text())["desired_ref"] == {"base": "plan", "path": "site.toml"}
    shutil.copy(tmp_path / "here" / "plan.json", tmp_path / "there" / "plan.json")
    monkeypatch.chdir(tmp_path)
    code, out, err = cli("apply", tmp_path / "there" / "plan.json", "--auto-approve", "--lab", lab)
    assert code == 4, out[-2000:] + err


def test_a_path_that_leaves_its_folder_is_refused(tmp_path):
    with pytest.raises(ReconcilerError, match="leaves its plan folder"):
        savedplan.locate_desired({"desired_ref": {"base": "plan", "path": "../../etc/passwd"}}, tmp_path / "plan.json")
    (tmp_path / "repo" / ".git").mkdir(parents=True)
    (tmp_path / "repo" / "link.toml").symlink_to("/etc/hostname")
    with pytest.raises(ReconcilerError, match="leads outside"):
        savedplan.locate_desired({"desired_ref": {"base": "repository", "path": "link.toml"}}, tmp_path / "plan.json", cwd=tmp_path / "repo")
