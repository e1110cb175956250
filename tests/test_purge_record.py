"""Purged users are licensed again as they were, also across a kill between the purge and
the licences: the journal records them (ids, UPNs, licences) before the purge runs, and
resume and later plans treat them as re-created (their cloud GUID is gone with the purge)."""

import json

from conftest import ROOT, plan_for
from providers.lab import scenario, store
from providers.lab.provider import LabTarget
from providers.lab.world import EXCHANGE_PLAN_ID
from reconciler.journal import last_interrupted, purge_owed
from reconciler.loader import load_desired
from reconciler.plan import build_plan
from reconciler.apply import observe
from reconciler.recreated import from_record
from test_faults import harness

REBUILD = ROOT / "desired-state" / "rebuild.toml"
FLAGS = ("--approve-irreversible", "--force")
E3, EMS = scenario.ENTERPRISEPACK_ID, scenario.EMS_ID


def lab_with_licences(path):
    lab = scenario.build(users=20)
    lab.assign_license("user04@contoso.com", E3, disabled_plans=[EXCHANGE_PLAN_ID])  # no mailbox meant for her
    lab.assign_license("user05@contoso.com", E3)
    lab.assign_license("user05@contoso.com", EMS)  # a second SKU
    store.save(lab, path)
    return lab


def journal_ends(case):
    lines = [json.loads(line) for line in next(case.glob("*.journal")).read_text().splitlines()]
    return [r["step"] for r in lines if r["event"] == "step-end"]


def licences(lab, upn):
    user = lab.cloud_user(upn)
    return sorted((lic.sku_id, tuple(lic.disabled_plans)) for lic in user.licenses)


def test_a_kill_between_the_purge_and_the_licences_resumes_to_users_licensed_as_before(tmp_path):
    lab = lab_with_licences(tmp_path / "lab.json")
    desired = load_desired(REBUILD)
    plan = plan_for(desired, LabTarget(lab))
    ids = [s.id for s in plan.steps]
    restored = {u.upn for s in plan.steps if s.id.startswith("licences.restore[") for u in s.operation.users}
    assert restored >= {"user01@contoso.com", "user04@contoso.com", "user05@contoso.com"}, ids
    before = {upn: (lab.cloud_user(upn).id, licences(lab, upn)) for upn in restored}

    killed = harness(tmp_path, f"boundary:{ids.index('purge') + 1}", "apply", REBUILD, "--auto-approve", *FLAGS)
    assert killed.returncode == -9, killed.stderr[-2000:]
    ends = journal_ends(tmp_path)
    assert ends[-1] == "purge" and not any(s.startswith("licences.") for s in ends), ends
    owed = {u["upn"]: u for u in purge_owed(next(tmp_path.glob("*.journal")))}
    assert set(owed) >= restored, "recorded before the purge ran"
    assert owed["user04@contoso.com"]["licences"] == [{"sku_id": E3, "disabled_plans": [EXCHANGE_PLAN_ID], "by_group": False}]
    assert all(owed[upn]["id"] == before[upn][0] for upn in restored)

    resumed = harness(tmp_path, "none", "apply", REBUILD, "--resume", "--auto-approve", *FLAGS)
    assert "Traceback" not in resumed.stderr, resumed.stderr[-2000:]
    lab = store.load(tmp_path / "lab.json")
    for upn in restored:
        user = lab.cloud_user(upn)
        assert user is not None and user.id != before[upn][0] and user.mailbox_guid is None, f"{upn} re-created"
        assert licences(lab, upn) == before[upn][1], f"{upn} licensed exactly as before the purge"
    for i in (1, 2, 3, 5):
        assert lab.mailbox_state(lab.cloud_user(f"user0{i}@contoso.com")) == "present"
    assert lab.mailbox_state(lab.cloud_user("user04@contoso.com")) == "absent", "Exchange stays off for her"
    unlicensed = {u.upn for u in lab.active_cloud_users() if u.upn.startswith("user") and not u.licenses}
    # As in an apply never killed: user07 has no usage location, the SKU's last unit is gone before user20.
    assert unlicensed == {"user07@contoso.com", "user20@contoso.com"}, f"re-created users left without a licence: {sorted(unlicensed)}"
    assert last_interrupted(next(tmp_path.glob("*.journal"))) is None
    assert {u["upn"] for u in purge_owed(next(tmp_path.glob("*.journal")))} == unlicensed, "settled once licensed again; the others stay owed"
    assert resumed.returncode == 4, resumed.stdout[-3000:]  # user07 and user20, named with their reasons
    assert "only users purged and re-created lose it" not in resumed.stdout


def test_a_later_plan_licenses_users_an_earlier_apply_purged(tmp_path):
    lab = lab_with_licences(tmp_path / "lab.json")
    plan = plan_for(load_desired(REBUILD), LabTarget(lab))
    ids = [s.id for s in plan.steps]
    # Killed right after the OU came back and synced: re-created, nothing licensed yet.
    killed = harness(tmp_path, f"boundary:{ids.index('sync.initial') + 1}", "apply", REBUILD, "--auto-approve", *FLAGS)
    assert killed.returncode == -9, killed.stderr[-2000:]
    lab = store.load(tmp_path / "lab.json")
    assert not lab.cloud_user("user05@contoso.com").licenses, "re-created, not licensed yet"
    desired = load_desired(REBUILD)
    target = LabTarget(lab)
    observed = observe(target, desired)
    purged = from_record(purge_owed(next(tmp_path.glob("*.journal"))), observed.tenant.skus)
    later = build_plan(desired, observed, "lab", purged=purged)
    steps = {s.id: s for s in later.steps}
    assert {u.upn for u in steps["licences.restore-owed[EMS]"].operation.users} == {"user05@contoso.com"}
    e3 = steps["licences.restore-owed[ENTERPRISEPACK]"].operation
    assert dict(e3.disabled_plans) == {"user04@contoso.com": (EXCHANGE_PLAN_ID,)}
    assert not any(o.code == "guid-stays" for o in later.outcomes), [o.reason for o in later.outcomes if o.code == "guid-stays"][:2]
    assert any(n.code == "purge-licences-owed" and "user05@contoso.com" in n.message for n in later.notices)


def test_drift_reads_the_purge_record_and_names_the_licences_owed(tmp_path, monkeypatch, capsys):
    """drift says what an earlier, killed apply owes the users it purged, never that their GUID stays."""
    from reconciler.cli.command import main

    lab_with_licences(tmp_path / "lab.json")
    plan = plan_for(load_desired(REBUILD), LabTarget(store.load(tmp_path / "lab.json")))
    ids = [s.id for s in plan.steps]
    killed = harness(tmp_path, f"boundary:{ids.index('sync.initial') + 1}", "apply", REBUILD, "--auto-approve", *FLAGS)
    assert killed.returncode == -9, killed.stderr[-2000:]
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    code = main(["drift", str(REBUILD), "--lab", str(tmp_path / "lab.json"), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 2
    missing = " ".join(i["detail"] for i in report["drift"] if i["what"] == "licence missing")
    assert "user05@contoso.com" in missing and "user04@contoso.com" in missing
    assert "only users purged and re-created lose it" not in json.dumps(report)
