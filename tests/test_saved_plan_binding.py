"""A saved plan is bound, then trusted (issue 15): integrity, the operator's desired-state
file by content, the target, the scripts, the age and an optional signature are checked
before anything else is read or connected. Attacks go against capture servers on loopback."""

import datetime as dt
import hashlib
import json
from pathlib import Path

import pytest

from capture import CaptureServer
from conftest import EXAMPLE
from test_credentials import SECRETS, remote_file

LAB = Path(".syncprep/lab.json")
KEY = "k" * 40


def edit(path, change):
    """Edit a saved plan and recompute its checksum, as anyone who can write the file can."""
    from reconciler import savedplan

    data = json.loads(Path(path).read_text())
    change(data)
    data.pop("signature", None)
    data["checksum"] = savedplan._checksum(data)
    Path(path).write_text(json.dumps(data))
    return data


@pytest.fixture
def env(monkeypatch, tmp_path):
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("SYNCPREP_PLAN_SIGNING_KEY", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return monkeypatch


def test_apply_never_follows_the_desired_state_path_written_in_a_plan(cli, env, tmp_path):
    with CaptureServer() as graph, CaptureServer() as winrm:
        evil = remote_file(tmp_path / "evil.toml", graph.url, winrm.port)
        # Even with the capture servers allowed, a plan cannot lead the apply there.
        env.setenv("SYNCPREP_ALLOW_ENDPOINTS", f"{graph.url},{winrm.url}")
        assert cli("plan", EXAMPLE, "-out", "plan.json")[0] == 0
        before = LAB.read_bytes()

        def redirect(data):
            data["desired_path"] = str(evil)
            data["desired_sha256"] = hashlib.sha256(evil.read_bytes()).hexdigest()

        edit("plan.json", redirect)
        code, _out, err = cli("apply", "plan.json", "--auto-approve")
        assert code == 1 and "--desired FILE" in err and "nothing was read" in err
        code, _out, err = cli("apply", "plan.json", "--desired", EXAMPLE, "--auto-approve")
        assert code == 1 and f"the plan was not made from {EXAMPLE} as it is now" in err
        assert not graph.requests and not winrm.requests
        assert LAB.read_bytes() == before


def test_the_plan_must_name_its_target(cli, env):
    cli("lab", "init", "--lab", "a.json")
    cli("lab", "init", "--lab", "b.json")
    cli("plan", EXAMPLE, "--lab", "a.json", "-out", "plan.json")
    edit("plan.json", lambda data: data.pop("target_key"))
    before = Path("b.json").read_bytes()
    code, _out, err = cli("apply", "plan.json", "--desired", EXAMPLE, "--auto-approve", "--lab", "b.json")
    assert code == 1 and "the plan names no target" in err
    assert Path("b.json").read_bytes() == before


def test_an_old_plan_is_refused_unless_the_operator_allows_its_age(cli, env):
    cli("plan", EXAMPLE, "-out", "plan.json")
    four_days_ago = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=4)).strftime("%Y-%m-%dT%H:%M:%SZ")
    edit("plan.json", lambda data: data.update(created=four_days_ago))
    before = LAB.read_bytes()
    code, _out, err = cli("apply", "plan.json", "--desired", EXAMPLE, "--auto-approve")
    assert code == 1 and "the plan is 96 h old, over the maximum of 72 h (--max-plan-age)" in err
    assert LAB.read_bytes() == before
    code, _out, err = cli("apply", "plan.json", "--desired", EXAMPLE, "--auto-approve", "--max-plan-age", "5d")
    assert code == 4, err  # 4: user07 (no usage location) and user20 (no unit) end without a licence
    assert cli("apply", "plan.json", "--desired", EXAMPLE, "--max-plan-age", "soon")[0] == 1


def test_a_plan_without_a_creation_time_is_refused(cli, env):
    cli("plan", EXAMPLE, "-out", "plan.json")
    edit("plan.json", lambda data: data.pop("created"))
    code, _out, err = cli("apply", "plan.json", "--desired", EXAMPLE, "--auto-approve")
    assert code == 1 and "no creation time" in err


def test_with_a_signing_key_only_plans_signed_with_it_are_applied(cli, env):
    env.setenv("SYNCPREP_PLAN_SIGNING_KEY", KEY)
    cli("plan", EXAMPLE, "-out", "signed.json")
    assert json.loads(Path("signed.json").read_text())["signature"].startswith("hmac-sha256:")
    env.delenv("SYNCPREP_PLAN_SIGNING_KEY")
    cli("plan", EXAMPLE, "-out", "unsigned.json")
    env.setenv("SYNCPREP_PLAN_SIGNING_KEY", KEY)
    before = LAB.read_bytes()
    code, _out, err = cli("apply", "unsigned.json", "--desired", EXAMPLE, "--auto-approve")
    assert code == 1 and "not signed" in err
    # An edit with the checksum recomputed passes the checksum, not the signature.
    Path("edited.json").write_text(Path("signed.json").read_text())
    data = json.loads(Path("edited.json").read_text())
    data["steps"][0]["summary"] = "something else"
    from reconciler import savedplan

    data["checksum"] = savedplan._checksum(data)
    Path("edited.json").write_text(json.dumps(data))
    code, _out, err = cli("apply", "edited.json", "--desired", EXAMPLE, "--auto-approve")
    assert code == 1 and "signature does not match" in err
    env.setenv("SYNCPREP_PLAN_SIGNING_KEY", "w" * 40)
    code, _out, err = cli("apply", "signed.json", "--desired", EXAMPLE, "--auto-approve")
    assert code == 1 and "signature does not match" in err
    assert LAB.read_bytes() == before
    env.setenv("SYNCPREP_PLAN_SIGNING_KEY", KEY)
    code, out, err = cli("apply", "signed.json", "--desired", EXAMPLE, "--auto-approve")
    assert code == 4, err  # 4: user07 (no usage location) and user20 (no unit) end without a licence
    env.setenv("SYNCPREP_PLAN_SIGNING_KEY", "short")
    code, _out, err = cli("plan", EXAMPLE, "-out", "x.json")
    assert code == 1 and "shorter than 32 characters" in err


def test_desired_goes_with_a_saved_plan_only(cli, env):
    code, _out, err = cli("apply", EXAMPLE, "--desired", EXAMPLE, "--auto-approve")
    assert code == 1 and "go with a saved plan" in err
