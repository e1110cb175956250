"""Findings of the hostile review of this round: --report keeps the file promises, and
malformed endpoints or plan ages are one line, never a traceback."""

import os
import stat

import pytest

from conftest import EXAMPLE
from providers.lab import store


def test_report_is_private_and_atomic(cli):
    code, _out, err = cli("plan", EXAMPLE, "--report", "r.csv")
    assert code == 0, err
    assert stat.S_IMODE(os.stat("r.csv").st_mode) == 0o600
    assert "user01@contoso.com" in open("r.csv", encoding="utf-8").read()


def test_report_never_writes_through_a_symlink(cli):
    open("victim.txt", "w").write("keep me\n")
    os.symlink("victim.txt", "link.csv")
    code, _out, err = cli("plan", EXAMPLE, "--report", "link.csv")
    assert code == 1
    assert "symbolic link" in err and "Traceback" not in err
    assert open("victim.txt").read() == "keep me\n"


def test_report_never_replaces_the_lab_file(cli):
    assert cli("lab", "init", "--lab", "n.json")[0] == 0
    code, _out, err = cli("plan", EXAMPLE, "--lab", "n.json", "--report", "n.json")
    assert code == 1
    assert "is the lab file" in err
    store.load("n.json")  # still a lab


def test_report_never_replaces_the_saved_plan(cli):
    code, _out, err = cli("plan", EXAMPLE, "-out", "p.json")
    assert code == 0, err
    before = open("p.json").read()
    code, _out, err = cli("apply", "p.json", "--desired", EXAMPLE, "--report", "p.json", "--auto-approve")
    assert code == 1 and "is the plan file" in err
    assert open("p.json").read() == before


@pytest.mark.parametrize("value", ["http://[::1", "[::1"])
def test_a_malformed_allowed_endpoint_is_one_line(cli, monkeypatch, value):
    monkeypatch.setenv("SYNCPREP_ALLOW_ENDPOINTS", value)
    _write_remote("remote.toml")
    code, _out, err = cli("plan", "remote.toml")
    assert code == 1
    assert "SYNCPREP_ALLOW_ENDPOINTS" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_a_malformed_graph_endpoint_is_one_line(cli):
    _write_remote("remote.toml", endpoint="https://[::1/v1.0")
    code, _out, err = cli("plan", "remote.toml")
    assert code == 1
    assert "target.graph.endpoint" in err and "Traceback" not in err


def test_an_absurd_plan_age_is_one_line(cli):
    assert cli("plan", EXAMPLE, "-out", "p.json")[0] == 0
    code, _out, err = cli("apply", "p.json", "--desired", EXAMPLE, "--max-plan-age", "99999999999d")
    assert code == 1
    assert "--max-plan-age" in err and "Traceback" not in err


def _write_remote(path, endpoint=None):
    graph = f'endpoint = "{endpoint}"\n' if endpoint else 'cloud = "global"\n'
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(
            '[target]\nkind = "remote"\n\n[target.entra_connect]\nhost = "127.0.0.1"\nssl = false\nauth = "basic"\n\n'
            f'[target.graph]\n{graph}auth = "token-env"\n'
        )


def test_drift_names_a_relicensed_user_once_not_as_licence_missing(target):
    """Review finding: user01-03 hold a licence that made no mailbox; drift listed them
    under both 'licensed without a mailbox' and 'licence missing'."""
    from reconciler import drift
    from reconciler.loader import load_desired

    desired = load_desired(EXAMPLE)
    report = drift.detect(desired, drift.observe_read_only(target.server, target.tenant, desired), "lab")
    without = [i for i in report.items if i.what == "licensed without a mailbox"]
    missing = [i for i in report.items if i.what == "licence missing"]
    assert without and "user01@contoso.com" in without[0].detail
    assert missing and all("user01@contoso.com" not in i.detail for i in missing)
    assert "user04@contoso.com" in missing[0].detail
