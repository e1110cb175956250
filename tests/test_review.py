"""Saved plans for review, drift detection (issue 6)."""

import json
from pathlib import Path

from attrs import evolve

from conftest import EXAMPLE, UPGRADE_SAFE, plan_and_apply
from providers.lab.provider import LabTenant
from reconciler.drift import EXIT_DRIFT, EXIT_INCOMPLETE, EXIT_IN_SYNC, detect, observe_read_only
from reconciler.loader import load_desired
from reconciler.model import MailboxState

LAB = Path(".syncprep/lab.json")


def test_a_saved_plan_applies_exactly(cli):
    code, _out, err = cli("plan", EXAMPLE, "-out", "plan.json")
    assert code == 0 and "Saved the plan to plan.json" in err
    saved = json.loads(Path("plan.json").read_text())
    assert saved["format"] == "syncprep-plan" and saved["format_version"] == "1.0"
    assert saved["desired_sha256"] and "scheduler" in saved["fingerprints"] and saved["checksum"]
    code, out, err = cli("apply", "plan.json", "--desired", EXAMPLE, "--auto-approve")
    assert code == 4, err  # 4: user07 (no usage location) and user20 (no unit) end without a licence
    assert "Apply complete: 14 step(s) done." in out
    assert cli("plan", EXAMPLE, "--detailed-exitcode")[0] == 0


def test_a_stale_plan_is_refused_naming_what_changed_and_nothing_changes(cli):
    cli("plan", EXAMPLE, "-out", "plan.json")
    cli("lab", "scheduler", "pause")
    before = LAB.read_bytes()
    code, _out, err = cli("apply", "plan.json", "--desired", EXAMPLE, "--auto-approve")
    assert code == 1
    assert "plan is stale: changed since the plan was made: scheduler; nothing was changed" in err
    assert LAB.read_bytes() == before


def test_a_changed_desired_state_file_makes_the_plan_stale(cli, tmp_path):
    desired = tmp_path / "mine.toml"
    desired.write_text(EXAMPLE.read_text())
    cli("plan", desired, "-out", "plan.json")
    desired.write_text(EXAMPLE.read_text().replace("relicense_without_mailbox = true", "relicense_without_mailbox = false"))
    code, _out, err = cli("apply", "plan.json", "--desired", desired, "--auto-approve")
    assert code == 1 and f"the plan was not made from {desired} as it is now" in err and "nothing was changed" in err


def test_an_edited_plan_file_is_refused(cli):
    cli("plan", EXAMPLE, "-out", "plan.json")
    data = json.loads(Path("plan.json").read_text())
    data["steps"][0]["summary"] = "something else"
    Path("plan.json").write_text(json.dumps(data))
    code, _out, err = cli("apply", "plan.json", "--desired", EXAMPLE, "--auto-approve")
    assert code == 1 and "modified after it was written" in err


def test_show_renders_a_saved_plan(cli):
    cli("plan", EXAMPLE, "-out", "plan.json")
    code, out, _ = cli("show", "plan.json")
    assert code == 0 and "Give the copy the original's precedence 108" in out
    code, out, _ = cli("show", "plan.json", "--json")
    assert json.loads(out) == json.loads(Path("plan.json").read_text())


def test_drift_after_an_upgrade_reports_the_stock_rule_and_clears_after_apply(cli):
    cli("apply", EXAMPLE, "--auto-approve")
    assert cli("drift", EXAMPLE)[0] == EXIT_IN_SYNC
    cli("lab", "upgrade")
    code, out, _ = cli("drift", EXAMPLE, "--json")
    assert code == EXIT_DRIFT
    report = json.loads(out)
    assert {(d["resource"], d["what"]) for d in report["drift"]} == {
        ("rule/In from AD - User Exchange", "stock rule back"),
        ("rule/In from AD - InetOrgPerson Exchange", "stock rule back"),
        # What the returned rules mean: the GUID flows again, and the next full sync brings it back.
        ("guid/user", "GUID flows"),
        ("guid/user", "GUID in the cloud"),
        ("guid/inetOrgPerson", "GUID flows"),
        ("guid/inetOrgPerson", "GUID in the cloud"),
    }
    assert any("after the next full sync" in d["detail"] for d in report["drift"] if d["what"] == "GUID in the cloud")
    cli("apply", EXAMPLE, "--auto-approve")
    assert cli("drift", EXAMPLE)[0] == EXIT_IN_SYNC


def test_drift_is_read_only(cli):
    cli("lab", "upgrade")
    cli("lab", "scheduler", "pause")
    before = LAB.read_bytes()
    mtime = LAB.stat().st_mtime_ns
    code, out, _ = cli("drift", EXAMPLE)
    assert code == EXIT_DRIFT and "scheduler off" in out
    assert LAB.read_bytes() == before and LAB.stat().st_mtime_ns == mtime


def test_drift_reports_a_removed_licence_and_a_changed_precedence(lab, target):
    plan_and_apply(UPGRADE_SAFE, target)
    desired = load_desired(UPGRADE_SAFE)
    user = lab.cloud_user("user05@contoso.com")
    lab.remove_license(user.id, user.licenses[0].sku_id)
    custom = next(r for r in lab.server.rules if r.name.startswith("Custom - In from AD - User"))
    lab.put_rule(evolve(custom, precedence=95))
    report = detect(desired, observe_read_only(target.server, target.tenant, desired))
    whats = {(i.what, i.resource) for i in report.items}
    assert ("licence missing", "licenses/ENTERPRISEPACK") in whats
    assert ("rule changed", "rule/Custom - In from AD - User NoMailboxGuid") in whats
    assert report.exit_code == EXIT_DRIFT


def test_equal_values_written_differently_are_not_drift(lab, target):
    plan_and_apply(UPGRADE_SAFE, target)
    desired = load_desired(UPGRADE_SAFE)
    custom = next(r for r in lab.server.rules if r.name.startswith("Custom - In from AD - User"))
    flow = custom.flows[0]
    # What PowerShell might hand back: padded expression, $null description, flows in another order.
    lab.server.rules[lab.server.rules.index(custom)] = evolve(
        custom, flows=(evolve(flow, expression="  AuthoritativeNull  "),), description=custom.description
    )
    report = detect(desired, observe_read_only(target.server, target.tenant, desired))
    assert report.items == () and report.exit_code == EXIT_IN_SYNC


def test_an_unreadable_mailbox_is_unknown_not_absent(lab, target):
    plan_and_apply(EXAMPLE, target)

    class Blind(LabTenant):
        def observe(self, selection):
            state = super().observe(selection)
            users = tuple(evolve(u, mailbox=MailboxState.UNKNOWN) if u.upn == "user05@contoso.com" else u for u in state.users)
            return evolve(state, users=users)

    desired = load_desired(EXAMPLE)
    report = detect(desired, observe_read_only(target.server, Blind(lab), desired))
    assert report.exit_code == EXIT_INCOMPLETE
    assert "user05@contoso.com" in report.unknown[0]
    assert not any("user05" in i.detail for i in report.items), "unknown is never reported as gone"


def test_a_saved_plan_is_bound_to_its_target_and_applies_from_anywhere(cli, tmp_path, monkeypatch):
    cli("lab", "init", "--lab", "a.json")
    cli("lab", "init", "--lab", "b.json")
    cli("plan", EXAMPLE, "--lab", "a.json", "-out", "plan.json")
    code, _out, err = cli("apply", "plan.json", "--desired", EXAMPLE, "--auto-approve", "--lab", "b.json")
    assert code == 1 and "not for this target" in err
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    code, out, err = cli("apply", tmp_path / "plan.json", "--desired", EXAMPLE, "--auto-approve", "--lab", tmp_path / "a.json")
    assert code == 4, err  # 4: user07 (no usage location) and user20 (no unit) end without a licence
