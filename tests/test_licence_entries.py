"""Issue 16: several [[licenses]] entries (SKUs, waves from CSV files, licensing groups)."""

import json

import pytest

from conftest import EXAMPLE, ROOT, plan_for
from providers.lab import scenario
from providers.lab.provider import LabTarget
from reconciler.apply import apply_plan, observe
from reconciler.errors import ConfigError, PlanError, ProviderError
from reconciler.loader import load_desired
from reconciler.operations import AddGroupMembers, RemoveLicense, ReprocessLicences
from reconciler.outcome import ended
from reconciler.plan import build_plan

REBUILD = ROOT / "desired-state" / "rebuild.toml"
HYBRID_OU = "OU=HybridUsers,OU=Corp,DC=contoso,DC=com"
APPROVED = frozenset({"irreversible"})


def with_licences(tmp_path, base, licences, name="desired.toml"):
    """``base`` (example.toml or rebuild.toml) with its [[licenses]] replaced by ``licences``."""
    head = base.read_text().split("[[licenses]]", 1)[0]
    path = tmp_path / name
    path.write_text(head + licences)
    return path


def group_entry(ous=HYBRID_OU):
    return f'[[licenses]]\nsku = "ENTERPRISEPACK"\ngroup = "Licensing-E3"\nous = ["{ous}"]\n'


# ---------------------------------------------------------------------------- several entries


def test_a_user_selected_by_two_entries_is_refused_naming_both_places(tmp_path):
    path = with_licences(
        tmp_path,
        EXAMPLE,
        '[[licenses]]\nsku = "ENTERPRISEPACK"\nusers = ["user01@contoso.com", "user02@contoso.com"]\n\n'
        '[[licenses]]\nsku = "EXCHANGESTANDARD"\nusers = ["user02@contoso.com"]\n',
    )
    with pytest.raises(ConfigError) as caught:
        load_desired(path)
    (line,) = caught.value.problems
    lines = path.read_text().splitlines()
    first = next(i for i, text in enumerate(lines, 1) if "user01@contoso.com" in text)
    second = next(i for i, text in enumerate(lines, 1) if text == 'users = ["user02@contoso.com"]')
    assert line == (
        f"{path}:{second}: licenses[1].users[0]: user02@contoso.com is selected by two [[licenses]] entries: "
        f"here and at {path}:{first}: licenses[0].users[1]"
    )


def test_a_user_selected_twice_through_ous_is_refused_at_plan_time_naming_both_entries(tmp_path):
    path = with_licences(
        tmp_path,
        EXAMPLE,
        f'[[licenses]]\nsku = "ENTERPRISEPACK"\nous = ["{HYBRID_OU}"]\n\n[[licenses]]\nsku = "ENTERPRISEPACK"\nusers_file = "w.csv"\n',
    )
    (tmp_path / "w.csv").write_text("UserPrincipalName\nuser05@contoso.com\n")
    desired = load_desired(path)
    target = LabTarget(scenario.build("default"))
    with pytest.raises(PlanError) as caught:
        plan_for(desired, target)
    lines = path.read_text().splitlines()
    assert str(caught.value) == (
        f"user05@contoso.com is selected by two [[licenses]] entries: {path}:{lines.index('[[licenses]]') + 1}: licenses[0] and "
        f"{path}:{len(lines) - 2}: licenses[1]; a user belongs to one entry (one SKU, one wave)"
    )


def test_a_sku_without_exchange_online_is_refused_with_the_reason(tmp_path):
    path = with_licences(tmp_path, EXAMPLE, '[[licenses]]\nsku = "EMS"\nusers = ["user05@contoso.com"]\n')
    with pytest.raises(PlanError, match=r"desired.toml:\d+: licenses\[0\]: EMS carries no Exchange Online plan, so licensing with it creates no mailbox"):
        plan_for(load_desired(path), LabTarget(scenario.build("default")))


def test_units_are_counted_per_sku_over_every_entry_that_uses_it(tmp_path):
    """Two waves of E3 and a mailbox-only SKU: one pool of E3 units for both waves."""
    lab = scenario.build("group-licensed")
    (tmp_path / "waves").mkdir()
    (tmp_path / "waves" / "wave-01.csv").write_text("Name,PrimarySmtpAddress\n" + "".join(f"U{i},user{i:02d}@contoso.com\n" for i in range(4, 12)))
    (tmp_path / "waves" / "wave-02.csv").write_text("Email\n" + "".join(f"user{i:02d}@contoso.com\n" for i in range(12, 21)))
    path = with_licences(
        tmp_path,
        EXAMPLE,
        '[[licenses]]\nsku = "ENTERPRISEPACK"\nusers_file = "waves/wave-01.csv"\n\n'
        '[[licenses]]\nsku = "ENTERPRISEPACK"\nusers_file = "waves/wave-02.csv"\n\n'
        '[[licenses]]\nsku = "EXCHANGESTANDARD"\nusers = ["contractor01@contoso.com", "user01@contoso.com", "user02@contoso.com", "user03@contoso.com"]\n',
    )
    e3 = lab.sku(scenario.ENTERPRISEPACK_ID)
    e3.prepaid = 1 + 3 + 12  # the admin, the group's three, and 12 of the 16 wave users who can be licensed
    plan = plan_for(load_desired(path), LabTarget(lab))
    short = {o.upn: o for o in plan.outcomes if o.code == "license-shortage"}
    e3_short = sorted(u for u, o in short.items() if o.sku == "ENTERPRISEPACK")
    assert e3_short == ["user17@contoso.com", "user18@contoso.com", "user19@contoso.com", "user20@contoso.com"]
    assert {o.reason for o in short.values() if o.sku == "ENTERPRISEPACK"} == {"no ENTERPRISEPACK unit left (16 needed, 12 available)"}
    assert [u for u, o in short.items() if o.sku == "EXCHANGESTANDARD"] == ["user03@contoso.com"]
    assert {o.reason for o in short.values() if o.sku == "EXCHANGESTANDARD"} == {"no EXCHANGESTANDARD unit left (4 needed, 3 available)"}
    by_wave = {o.upn: o.wave for o in plan.outcomes}
    assert by_wave["user04@contoso.com"] == "wave-01" and by_wave["user12@contoso.com"] == "wave-02" and by_wave["contractor01@contoso.com"] == ""
    ids = [s.id for s in plan.steps if s.provider == "tenant"]
    assert "license[ENTERPRISEPACK/wave-01].assign" in ids and "license[ENTERPRISEPACK/wave-02].assign" in ids
    assert "license[EXCHANGESTANDARD].assign" in ids


def test_a_mixed_sku_desired_state_with_a_wave_file_applies_and_reports_per_sku_and_per_wave(tmp_path):
    from reconciler import report

    target = LabTarget(scenario.build("default"))
    lab = target.lab
    from providers.lab.world import LabSku

    lab.skus.append(LabSku(scenario.EXCHANGESTANDARD_ID, "EXCHANGESTANDARD", prepaid=2))
    (tmp_path / "waves").mkdir()
    (tmp_path / "waves" / "wave-03.csv").write_text("\ufeffDisplayName,UserPrincipalName\r\nFour,user04@contoso.com\r\nFive,USER05@contoso.com\r\n")
    path = with_licences(
        tmp_path,
        EXAMPLE,
        '[[licenses]]\nsku = "ENTERPRISEPACK"\nusers_file = "waves/wave-03.csv"\n\n'
        '[[licenses]]\nsku = "EXCHANGESTANDARD"\nusers = ["user08@contoso.com", "user09@contoso.com", "user10@contoso.com"]\n',
    )
    desired = load_desired(path)
    plan = plan_for(desired, target)
    (short,) = [o for o in plan.outcomes if o.code == "license-shortage"]
    assert (short.upn, short.reason) == ("user10@contoso.com", "no EXCHANGESTANDARD unit left (3 needed, 2 available)")
    result = apply_plan(plan, desired, target)
    rows = {r["upn"].lower(): r for r in ended(result.outcomes, observe(target, desired).tenant)}
    assert {u: (r["sku"], r["wave"], r["as_desired"]) for u, r in rows.items()} == {
        "user04@contoso.com": ("ENTERPRISEPACK", "wave-03", True),
        "user05@contoso.com": ("ENTERPRISEPACK", "wave-03", True),
        "user08@contoso.com": ("EXCHANGESTANDARD", "", True),
        "user09@contoso.com": ("EXCHANGESTANDARD", "", True),
        "user10@contoso.com": ("EXCHANGESTANDARD", "", False),
    }
    out = tmp_path / "report.csv"
    report.write(list(rows.values()), out)
    header, *lines = out.read_text().splitlines()
    assert header.split(",")[:4] == ["upn", "object_type", "sku", "wave"]
    assert any(line.startswith("user04@contoso.com,user,ENTERPRISEPACK,wave-03,") for line in lines)
    assert build_plan(desired, observe(target, desired), "lab").steps == ()


# ---------------------------------------------------------------------------- waves


@pytest.mark.parametrize(
    "text, column, problem",
    [
        ("Name,Mail\nA,a@contoso.com\n", None, "w.csv:1: no column UserPrincipalName, Email, PrimarySmtpAddress to read users from (the header has 'Name', 'Mail'); name one with users_column"),
        ("Name,Mail\nA,a@contoso.com\n", "Address", "w.csv:1: no column 'Address' (users_column); the header has 'Name', 'Mail'"),
        ("Email\nuser01@contoso.com\n\nnot-an-address\n", None, "w.csv:4: 'not-an-address' is not a valid user principal name (name@domain.tld)"),
        ("Email\nuser01@contoso.com\nUSER01@contoso.com\n", None, "w.csv:3: USER01@contoso.com is listed twice (also line 2)"),
        ('Email,Name\nuser01@contoso.com,"open\n', None, "w.csv:2: not valid CSV: unexpected end of data"),
        ("Name,Email\nA,\n", None, "w.csv:2: no value in column 'Email'"),
        ("Email\n", None, "w.csv: names no users"),
    ],
)
def test_a_bad_wave_file_is_one_line_naming_the_file_and_its_line(tmp_path, text, column, problem):
    (tmp_path / "w.csv").write_text(text)
    extra = f'users_column = "{column}"\n' if column else ""
    path = with_licences(tmp_path, EXAMPLE, f'[[licenses]]\nsku = "ENTERPRISEPACK"\nusers_file = "w.csv"\n{extra}')
    with pytest.raises(ConfigError) as caught:
        load_desired(path)
    line = len(path.read_text().splitlines()) - (1 if column else 0)
    assert list(caught.value.problems) == [f"{tmp_path / problem} (read for {path}:{line}: licenses[0].users_file)"]


def test_a_missing_wave_file_is_named(tmp_path):
    path = with_licences(tmp_path, EXAMPLE, '[[licenses]]\nsku = "ENTERPRISEPACK"\nusers_file = "waves/wave-09.csv"\n')
    with pytest.raises(ConfigError) as caught:
        load_desired(path)
    assert list(caught.value.problems) == [f"{tmp_path / 'waves' / 'wave-09.csv'}: no such file (read for {path}:{len(path.read_text().splitlines())}: licenses[0].users_file)"]


def test_the_users_column_is_found_by_name_and_loader_fields_are_no_toml_keys(tmp_path):
    (tmp_path / "w.csv").write_text("Login,Address\nx,user03@contoso.com\n")
    path = with_licences(tmp_path, EXAMPLE, '[[licenses]]\nsku = "ENTERPRISEPACK"\nusers_file = "w.csv"\nusers_column = "address"\n')
    assert load_desired(path).licenses[0].file_users == ("user03@contoso.com",)
    bad = with_licences(tmp_path, EXAMPLE, '[[licenses]]\nsku = "ENTERPRISEPACK"\nfile_users = ["user03@contoso.com"]\n', "bad.toml")
    with pytest.raises(ConfigError, match=r"licenses\[0\]\.file_users: unknown key"):
        load_desired(bad)


def test_a_changed_wave_file_makes_a_saved_plan_stale(tmp_path):
    from reconciler import savedplan

    (tmp_path / "w.csv").write_text("Email\nuser04@contoso.com\n")
    path = with_licences(tmp_path, EXAMPLE, '[[licenses]]\nsku = "ENTERPRISEPACK"\nusers_file = "w.csv"\n')
    desired = load_desired(path)
    target = LabTarget(scenario.build("default"))
    observed = observe(target, desired)
    saved = savedplan.make_saved(build_plan(desired, observed, "lab"), desired, observed, target_key=target.key)
    savedplan.bind(saved, load_desired(path), "plan.json")  # unchanged: bound
    savedplan.check_fresh(saved, load_desired(path), observed, target.key)
    (tmp_path / "w.csv").write_text("Email\nuser04@contoso.com\nuser05@contoso.com\n")
    with pytest.raises(savedplan.StalePlan, match=r"plan.json: the plan was not made from the wave file\(s\) w.csv as they are now"):
        savedplan.bind(saved, load_desired(path), "plan.json")
    with pytest.raises(savedplan.StalePlan, match=r"plan is stale: the wave file\(s\) w.csv changed"):
        savedplan.check_fresh(saved, load_desired(path), observed, target.key)


# ---------------------------------------------------------------------------- group-based licensing


def test_the_lab_refuses_to_remove_a_licence_inherited_from_a_group_as_graph_does():
    lab = scenario.build("group-licensed")
    with pytest.raises(ProviderError) as caught:
        lab.remove_license("user01@contoso.com", scenario.ENTERPRISEPACK_ID)
    assert caught.value.message == "User license is inherited from a group membership and it cannot be removed directly from the user."
    with pytest.raises(ProviderError, match=r"^.*One or more added object references already exist for the following modified properties: 'members'\.$"):
        lab.add_group_member(scenario.LICENSING_GROUP, "user01@contoso.com")


def test_a_plain_sku_entry_never_plans_removing_a_group_licence_it_reprocesses_it(tmp_path):
    """Before issue 16 the group-licensed users were only reported; never removed either."""
    target = LabTarget(scenario.build("group-licensed"))
    plan = plan_for(EXAMPLE, target)
    assert not any(isinstance(s.operation, RemoveLicense) and {u.upn for u in s.operation.users} & {"user01@contoso.com"} for s in plan.steps)
    (reprocess,) = [s for s in plan.steps if isinstance(s.operation, ReprocessLicences)]
    assert [u.upn for u in reprocess.operation.users] == ["user01@contoso.com", "user02@contoso.com", "user03@contoso.com"]
    assert any(n.code == "lab-assumption-reprocess" and n.message.startswith("Lab assumption:") for n in plan.notices)


@pytest.mark.parametrize("base", [EXAMPLE, REBUILD], ids=["solution-1", "solution-2"])
def test_group_licensed_lab_plans_applies_and_replans_to_no_changes_in_process(tmp_path, base):
    lab = scenario.build("group-licensed")
    target = LabTarget(lab)
    desired = load_desired(with_licences(tmp_path, base, group_entry()))
    plan = plan_for(desired, target)
    adds = [s for s in plan.steps if isinstance(s.operation, AddGroupMembers)]
    assert adds and adds[0].operation.group_name == "Licensing-E3"
    assert not any(isinstance(s.operation, RemoveLicense) for s in plan.steps)
    result = apply_plan(plan, desired, target, approvals=APPROVED, force=True)
    assert all(r.status.value == "done" for r in result.results), [(r.step_id, r.detail) for r in result.results]
    group = lab.group("Licensing-E3")
    ready = [u for u in lab.active_cloud_users() if u.synced and lab.mailbox_state(u) == "present"]
    assert len(ready) == 19 and all(u.id in group.members and u.license(scenario.ENTERPRISEPACK_ID).by_group for u in ready)
    again = plan_for(desired, target)
    assert again.steps == (), [s.summary for s in again.steps]


@pytest.mark.parametrize("base", [EXAMPLE, REBUILD], ids=["solution-1", "solution-2"])
def test_group_licensed_lab_plans_applies_and_replans_to_no_changes_through_lab_serve(tmp_path, base):
    from test_serve import SECRETS, _serve, run

    lab = scenario.build("group-licensed", users=8)
    lab.server.sync_interval = 100_000
    lab.server.next_scheduled_at = lab.clock + 100_000
    for tmp, env, graph, port, _text in _serve(tmp_path, "--speed", "600", lab=lab):
        head = (
            f'[target]\nkind = "remote"\n[target.graph]\nendpoint = "{graph}"\nauth = "token-env"\npoll_seconds = 0.5\n'
            f'[target.entra_connect]\nhost = "127.0.0.1"\nport = {port}\nssl = false\nauth = "basic"\npoll_seconds = 0.5\n\n[scheduler]'
        )
        body = base.read_text().split("[scheduler]", 1)[1].split("[[licenses]]", 1)[0]
        desired = tmp / "remote.toml"
        desired.write_text(head + body + group_entry())
        plan = run(env, tmp, "plan", desired, "--detailed-exitcode")
        assert plan.returncode == 2, plan.stdout[-3000:] + plan.stderr[-2000:]
        # Solution 1: the three members are reprocessed; Solution 2 purges them too (their units come free).
        joining = 4 if base == EXAMPLE else 7
        assert f"Add {joining} user(s) to the licensing group 'Licensing-E3'" in plan.stdout
        extra = ("--approve-irreversible", "--force") if base == REBUILD else ()
        applied = run(env, tmp, "apply", desired, "--auto-approve", *extra)
        # user07 has no usage location, and one unit is short: exit 4 names them.
        assert applied.returncode == 4, applied.stdout[-3000:] + applied.stderr[-2000:]
        assert "7 of 7 mailboxes present" in applied.stdout
        again = run(env, tmp, "plan", desired, "--detailed-exitcode")
        assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-2000:]
        assert not any(v in out for v in SECRETS.values() for out in (plan.stdout, applied.stdout, again.stdout))


def test_the_readme_reference_and_an_example_show_every_licence_key():
    import attrs

    from reconciler.desired import LicenseSpec

    readme = (ROOT / "README.md").read_text()
    reference = readme.split("## Desired-state reference", 1)[1].split("```toml", 1)[1].split("```", 1)[0]
    keys = [f.name for f in attrs.fields(LicenseSpec) if f.name not in ("file_users", "place")]
    assert [k for k in keys if f"\n{k} = " not in reference] == []
    waves = load_desired(ROOT / "desired-state" / "waves.toml")
    assert waves.licenses[0].file_users and waves.files[0][0] == "waves/wave-01.csv"


def test_the_graph_emulator_refuses_removing_an_inherited_licence_and_adding_a_member_twice_as_graph_does():
    from providers.lab.graph_emulator import GraphEmulator
    from providers.lab.host import LabHost
    from test_graph_emulator import TOKEN, call

    lab = scenario.build("group-licensed", users=8)
    with GraphEmulator(LabHost(lab), token=TOKEN, retry_after=0.01) as emu:
        user01 = lab.cloud_user("user01@contoso.com")
        status, _h, body = call(emu, "POST", f"/users/{user01.id}/assignLicense", {"addLicenses": [], "removeLicenses": [scenario.ENTERPRISEPACK_ID]})
        assert (status, body["error"]["message"]) == (400, "User license is inherited from a group membership and it cannot be removed directly from the user.")
        assert user01.license(scenario.ENTERPRISEPACK_ID) is not None
        status, _h, body = call(emu, "GET", "/groups?$filter=displayName%20eq%20'licensing-e3'&$select=id,displayName,assignedLicenses")
        (group,) = body["value"]
        assert group["assignedLicenses"] == [{"disabledPlans": [], "skuId": scenario.ENTERPRISEPACK_ID}]
        ref = {"@odata.id": f"{emu.base_url}/directoryObjects/{user01.id}"}
        status, _h, body = call(emu, "POST", f"/groups/{group['id']}/members/$ref", ref)
        assert (status, body["error"]["message"]) == (400, "One or more added object references already exist for the following modified properties: 'members'.")
        user04 = lab.cloud_user("user04@contoso.com")
        status, _h, _body = call(emu, "POST", f"/groups/{group['id']}/members/$ref", {"@odata.id": f"{emu.base_url}/directoryObjects/{user04.id}"})
        assert status == 204
        status, _h, body = call(emu, "GET", f"/users/{user04.id}?$select=licenseAssignmentStates")
        assert [s["assignedByGroup"] for s in body["licenseAssignmentStates"]] == [group["id"]]
        status, _h, body = call(emu, "GET", f"/users/{user04.id}/memberOf?$select=id")
        assert [g["id"] for g in body["value"]] == [group["id"]]


def test_apply_of_the_waves_example_reports_per_sku_and_per_wave(tmp_path, monkeypatch, capsys):
    import csv

    from reconciler.cli.command import main

    monkeypatch.chdir(tmp_path)
    lab_file = str(tmp_path / "lab.json")
    assert main(["lab", "init", "--scenario", "group-licensed", "--lab", lab_file]) == 0
    waves = str(ROOT / "desired-state" / "waves.toml")
    assert main(["plan", waves, "--lab", lab_file]) == 0
    planned = capsys.readouterr().out
    assert "ENTERPRISEPACK through Licensing-E3, wave-01: 6 user(s): 2 reprocess group licence, 4 assign" in planned
    assert "EXCHANGESTANDARD: 1 user(s): 1 assign" in planned
    assert main(["apply", waves, "--lab", lab_file, "--auto-approve", "--report", str(tmp_path / "r.csv")]) == 0
    applied = capsys.readouterr().out
    assert "ENTERPRISEPACK through Licensing-E3, wave-01: 6 of 6 user(s) ended as desired" in applied
    assert "EXCHANGESTANDARD: 1 of 1 user(s) ended as desired" in applied
    rows = list(csv.DictReader((tmp_path / "r.csv").open()))
    assert {(r["upn"], r["sku"], r["wave"], r["group"], r["as_desired"]) for r in rows} == {
        *((f"user0{i}@contoso.com", "ENTERPRISEPACK", "wave-01", "Licensing-E3", "True") for i in (1, 2, 4, 5, 6, 8)),
        ("contractor01@contoso.com", "EXCHANGESTANDARD", "", "", "True"),
    }
    assert main(["plan", waves, "--lab", lab_file, "--detailed-exitcode"]) == 0


def test_drift_names_users_missing_from_the_licensing_group_and_group_licences_without_a_mailbox(tmp_path):
    from reconciler.drift import detect

    lab = scenario.build("group-licensed")
    target = LabTarget(lab)
    desired = load_desired(with_licences(tmp_path, EXAMPLE, group_entry()))
    report = detect(desired, observe(target, desired), "lab")
    whats = {(i.what, i.detail.split(":")[0]) for i in report.items}
    assert ("licence missing", "16 user(s) not in the licensing group 'Licensing-E3'") in whats
    assert ("licensed without a mailbox", "3 user(s) with a group licence") in whats
    apply_plan(plan_for(desired, target), desired, target)
    assert detect(desired, observe(target, desired), "lab").items == ()


def test_several_skus_relicensed_keep_the_plans_an_admin_switched_off(tmp_path):
    from providers.lab.world import LabSku

    teams = "57ff2da0-773e-42df-b2af-ffb7a2317929"  # not an Exchange plan: the mailbox still comes
    lab = scenario.build("default")
    lab.skus.append(LabSku(scenario.EXCHANGESTANDARD_ID, "EXCHANGESTANDARD", prepaid=2))
    lab.cloud_user("user01@contoso.com").license(scenario.ENTERPRISEPACK_ID).disabled_plans = [teams]
    lab.assign_license("user05@contoso.com", scenario.EXCHANGESTANDARD_ID, [teams])  # the GUID is in the cloud: no mailbox
    target = LabTarget(lab)
    path = with_licences(
        tmp_path,
        EXAMPLE,
        '[[licenses]]\nsku = "ENTERPRISEPACK"\nusers = ["user01@contoso.com", "user02@contoso.com"]\n\n'
        '[[licenses]]\nsku = "EXCHANGESTANDARD"\nusers = ["user05@contoso.com"]\n',
    )
    desired = load_desired(path)
    plan = plan_for(desired, target)
    assert {o.upn: o.verdict.value for o in plan.outcomes} == {
        "user01@contoso.com": "remove and assign again",
        "user02@contoso.com": "remove and assign again",
        "user05@contoso.com": "remove and assign again",
    }
    apply_plan(plan, desired, target)
    user01, user05 = lab.cloud_user("user01@contoso.com"), lab.cloud_user("user05@contoso.com")
    assert user01.license(scenario.ENTERPRISEPACK_ID).disabled_plans == (teams,)
    assert user05.license(scenario.EXCHANGESTANDARD_ID).disabled_plans == (teams,)
    assert lab.mailbox_state(user01) == "present" and lab.mailbox_state(user05) == "present"


def test_lab_show_lists_the_licensing_groups(tmp_path, capsys):
    from reconciler.cli.command import main

    lab_file = str(tmp_path / "lab.json")
    assert main(["lab", "init", "--scenario", "group-licensed", "--lab", lab_file]) == 0
    assert main(["lab", "show", "--lab", lab_file]) == 0
    assert "Licensing groups: Licensing-E3 (ENTERPRISEPACK; 3 member(s))" in capsys.readouterr().out
    assert main(["lab", "show", "--json", "--lab", lab_file]) == 0
    groups = json.loads(capsys.readouterr().out)["tenant"]["groups"]
    assert [(g["name"], g["licenses"], g["members"]) for g in groups] == [("Licensing-E3", ["ENTERPRISEPACK"], 3)]
