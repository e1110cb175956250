"""Several AD forests (issue 16): each AD connector has its own stock rules (same names, other
precedences), its own OU scope and its own purge selection; and a scope change counts every kind
of object that leaves the scope, not only users (issue 12, point 6)."""

import pytest

from conftest import EXAMPLE, ROOT, plan_for
from providers.lab import scenario, store
from providers.lab.provider import LabTarget
from reconciler.apply import apply_plan, observe
from reconciler.errors import ConfigError, PlanError
from reconciler.loader import loads_desired, load_desired
from reconciler.plan import build_plan

REBUILD = ROOT / "desired-state" / "rebuild.toml"
TWO_FORESTS = ROOT / "desired-state" / "two-forests.toml"
EXCHANGE = "In from AD - User Exchange"


def _converge(path, target):
    desired = load_desired(path)
    plan = build_plan(desired, observe(target, desired), target.description)
    report = apply_plan(plan, desired, target, approvals=frozenset(plan.approvals_needed), force=True)
    failed = [r for r in report.results if r.status.value != "done"]
    assert not failed, failed
    again = build_plan(desired, observe(target, desired), target.description)
    assert not again.steps, [s.id for s in again.steps]
    return plan


def _rules(lab, name):
    return {lab.connector(r.connector).name: r for r in lab.server.rules if r.name == name}


def test_solution_1_replaces_each_connectors_stock_rule_at_its_own_precedence_and_converges():
    lab = scenario.build("two-forest")
    before = _rules(lab, EXCHANGE)
    assert {n: r.precedence for n, r in before.items()} == {"contoso.com": 108, "fabrikam.com": 128}
    plan = _converge(EXAMPLE, LabTarget(lab))
    ids = [s.id for s in plan.steps]
    for forest in ("contoso.com", "fabrikam.com"):
        assert f"rule[{EXCHANGE} ({forest})].copy" in ids and f"rule[{EXCHANGE} ({forest})].remove-original" in ids
    # Temporary precedences are unique across all rules, both forests' copies included.
    temporary = [s.operation.rule.precedence for s in plan.steps if s.id.endswith(".copy")]
    assert len(temporary) == len(set(temporary)) == 4
    # Each connector shows its own rules and GUID winner.
    flows = {(g.connector, g.object_type): g for g in plan.guid_flows}
    assert set(flows) == {(f, t) for f in ("contoso.com", "fabrikam.com") for t in ("user", "inetOrgPerson")}
    assert "(128," in flows[("fabrikam.com", "user")].now and "(108," in flows[("contoso.com", "user")].now
    assert all(g.flows_now and not g.flows_after for g in plan.guid_flows)
    after = _rules(lab, EXCHANGE)
    assert {n: (r.precedence, r.is_standard) for n, r in after.items()} == {"contoso.com": (108, False), "fabrikam.com": (128, False)}
    assert after["contoso.com"].identifier != after["fabrikam.com"].identifier


def test_a_rule_named_for_one_connector_changes_only_that_connectors_rule_and_licenses_only_its_users(tmp_path):
    lab = scenario.build("two-forest")
    text = EXAMPLE.read_text().replace('kind = "replacement"\n', 'kind = "replacement"\nconnector = "fabrikam.com"\n')
    text = text.replace('ous = ["OU=HybridUsers,OU=Corp,DC=contoso,DC=com"]', f'ous = ["OU=HybridUsers,OU=Corp,DC=contoso,DC=com", "{scenario.FABRIKAM_OU}"]')
    path = tmp_path / "one.toml"
    path.write_text(text)
    plan = _converge(path, LabTarget(lab))
    rule_steps = [s.id for s in plan.steps if s.id.startswith("rule[")]
    assert rule_steps and all("(fabrikam.com)" in i for i in rule_steps)
    # The outcome is told per forest: contoso's GUID still flows from its own stock rule.
    verdicts = {o.upn: o.code for o in plan.outcomes}
    assert verdicts["user05@contoso.com"] == "guid-stays"
    assert all(verdicts[f"fab0{i}@fabrikam.com"] != "guid-stays" for i in (1, 2, 3))
    fab = [u for u in lab.active_cloud_users() if u.upn.endswith("@fabrikam.com")]
    assert all(lab.mailbox_state(u) == "present" for u in fab)


def test_one_precedence_for_two_connectors_copies_is_refused_with_the_way_out():
    lab = scenario.build("two-forest")
    text = EXAMPLE.read_text().replace('name = "In from AD - User Exchange"\nkind = "replacement"\n', 'name = "In from AD - User Exchange"\nkind = "replacement"\nprecedence = 108\n')
    with pytest.raises(PlanError) as err:
        plan_for(loads_desired(text, "p.toml"), LabTarget(lab))
    assert "precedence 108 is one precedence for the copies on 2 connectors (contoso.com, fabrikam.com)" in str(err.value)


def test_connector_keys_in_the_desired_state():
    ok = loads_desired(
        '[[rules]]\nname = "In from AD - User Exchange"\nkind = "stock"\nconnector = "all-ad"\nenabled = false\n'
        '[[rules]]\nname = "In from AD - User Common"\nkind = "replacement"\nconnector = "contoso.com"\n[[rules.flows]]\ndestination = "x"\nflow_type = "Expression"\nexpression = "NULL"\n'
        '[[rules]]\nname = "In from AD - User Common"\nkind = "replacement"\nconnector = "fabrikam.com"\n[[rules.flows]]\ndestination = "x"\nflow_type = "Expression"\nexpression = "NULL"\n'
    )
    assert [r.connector for r in ok.rules] == ["all-ad", "contoso.com", "fabrikam.com"]
    with pytest.raises(ConfigError) as err:
        loads_desired(
            '[[rules]]\nname = "A"\nkind = "stock"\n'
            '[[rules]]\nname = "A"\nkind = "stock"\nconnector = "fabrikam.com"\n'
            '[[rules]]\nname = "C"\nsource_object_type = "user"\nprecedence = 50\nconnector = "all-ad"\n[[rules.flows]]\ndestination = "x"\nflow_type = "Expression"\nexpression = "NULL"\n',
            "k.toml",
        )
    problems = "\n".join(err.value.problems)
    assert "k.toml:7: rules[1].connector: rules[0] manages 'A' on every connector already" in problems
    assert "rules[2].connector: a custom rule is written for one connector" in problems


def test_solution_2_with_one_forest_purged_leaves_the_other_forest_alone():
    lab = scenario.build("two-forest")
    fabrikam = lab.connector(scenario.FABRIKAM_CONNECTOR)
    plan = _converge(REBUILD, LabTarget(lab))
    assert [s.id for s in plan.steps if "scope" in s.id] == ["rebuild.scope.exclude[contoso.com]", "scope.containers[contoso.com]"]
    assert lab.connector(scenario.FABRIKAM_CONNECTOR) == fabrikam
    fab = {u.upn: u for u in lab.active_cloud_users() if u.upn.endswith("@fabrikam.com")}
    assert len(fab) == 3 and all(u.mailbox_guid for u in fab.values()), "the other forest's users were not re-created"


def test_solution_2_across_both_forests_scopes_and_purges_per_connector_and_converges():
    lab = scenario.build("two-forest")
    plan = _converge(TWO_FORESTS, LabTarget(lab))
    scope_steps = {s.id: s.operation for s in plan.steps if "scope" in s.id}
    assert set(scope_steps) == {f"{p}[{f}]" for p in ("rebuild.scope.exclude", "scope.containers") for f in ("contoso.com", "fabrikam.com")}
    out = scope_steps["rebuild.scope.exclude[fabrikam.com]"]
    assert out.connector == scenario.FABRIKAM_CONNECTOR and out.excluded == (scenario.FABRIKAM_OU,)
    assert scope_steps["rebuild.scope.exclude[contoso.com]"].excluded == (scenario.HYBRID_OU,)
    fab = [u for u in lab.active_cloud_users() if u.upn.endswith("@fabrikam.com")]
    assert len(fab) == 3 and not any(u.mailbox_guid for u in fab), "re-created without the GUID"
    assert all(lab.mailbox_state(u) == "present" for u in fab)
    assert all(not c.excluded_containers for c in lab.ad_connectors())


@pytest.mark.parametrize("name", ["default", "two-forest"])
def test_the_scope_warning_counts_groups_contacts_and_devices_too(name):
    """Issue 12, point 6: the plan's warning named only users; the groups, the contact and the
    computers of the OU leave the scope with them (and are deleted in the cloud)."""
    lab = scenario.build(name, users=8)
    plan = plan_for(REBUILD, LabTarget(lab))
    (notice,) = [n for n in plan.notices if n.code == "scope-objects"]
    assert "takes 14 object(s) out of sync (9 user(s), 2 group(s), 1 contact(s), 2 device(s))" in notice.message


def test_the_served_provider_counts_the_connector_space_too(served):
    lab, endpoint, server = served(scenario.build("two-forest", users=8))
    counts = server.count_objects()
    assert counts == LabTarget(lab).server.count_objects()
    kinds = {c.object_type for c in counts}
    assert {"user", "inetOrgPerson", "group", "contact", "computer"} <= kinds
    assert any("Get-ADSyncCSObject -ConnectorIdentifier" in s for s in endpoint.scripts)


def test_a_lab_file_without_other_objects_still_loads(tmp_path):
    lab = scenario.build("default", users=4)
    lab.ad_objects = []
    text = store.dumps(lab).replace(',"ad_objects":[]', "")
    assert '"ad_objects"' not in text
    assert store.loads(text).ad_objects == []


def _remote(tmp_path, graph, port, path):
    """``path`` with a [target] that points at the served lab."""
    body = path.read_text().split("[scheduler]", 1)[1]
    target = (
        f'[target]\nkind = "remote"\n[target.graph]\nendpoint = "{graph}"\nauth = "token-env"\npoll_seconds = 0.5\n'
        f'[target.entra_connect]\nhost = "127.0.0.1"\nport = {port}\nssl = false\nauth = "basic"\npoll_seconds = 0.5\n\n[scheduler]'
    )
    remote = tmp_path / f"remote-{path.name}"
    remote.write_text(target + body)
    return remote


@pytest.mark.parametrize("path", [EXAMPLE, TWO_FORESTS], ids=lambda p: p.name)
def test_two_forests_through_syncprep_lab_serve(tmp_path, path):
    """The CLI against `syncprep lab serve` on a two-forest lab: plan, apply, and plan again to no changes."""
    from test_serve import _serve, run

    lab = scenario.build("two-forest")
    lab.server.sync_interval = 100_000
    lab.server.next_scheduled_at = lab.clock + 100_000
    serving = _serve(tmp_path, "--speed", "600", lab=lab)
    cwd, env, graph, port, _text = next(serving)
    try:
        desired = _remote(cwd, graph, port, path)
        plan = run(env, cwd, "plan", desired, "--detailed-exitcode")
        assert plan.returncode == 2, plan.stdout[-2000:] + plan.stderr[-2000:]
        assert "by AD connector and object type" in plan.stdout and "(fabrikam.com)" in plan.stdout
        applied = run(env, cwd, "apply", desired, "--auto-approve", "--approve-irreversible", "--force")
        assert applied.returncode in (0, 4), applied.stdout[-3000:] + applied.stderr[-2000:]
        again = run(env, cwd, "plan", desired, "--detailed-exitcode")
        assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    finally:
        serving.close()


def test_a_container_no_forest_holds_is_one_clear_line():
    lab = scenario.build("two-forest", users=4)
    text = TWO_FORESTS.read_text().replace('"OU=Staff,OU=Fabrikam,DC=fabrikam,DC=com"]\nmax_count', '"OU=Staff,DC=tailspin,DC=com"]\nmax_count')
    with pytest.raises(PlanError) as err:
        plan_for(loads_desired(text, "t.toml"), LabTarget(lab))
    assert str(err.value).startswith("scope: no AD connector of the server's 2 hold the domain of OU=Staff,DC=tailspin,DC=com")


def test_drift_after_solution_1_on_two_forests_is_in_sync():
    from reconciler import drift

    lab = scenario.build("two-forest", users=8)
    target = LabTarget(lab)
    _converge(EXAMPLE, target)
    desired = load_desired(EXAMPLE)
    report = drift.detect(desired, drift.observe_read_only(target.server, target.tenant, desired), "lab")
    assert report.exit_code == drift.EXIT_IN_SYNC, [i.what for i in report.items]


def test_an_upgrade_brings_back_each_connectors_stock_rule_and_the_next_plan_deletes_each():
    lab = scenario.build("two-forest", users=8)
    target = LabTarget(lab)
    _converge(EXAMPLE, target)
    restored = lab.upgrade()
    assert sorted((lab.connector(r.connector).name, r.name) for r in restored) == [
        (forest, name) for forest in ("contoso.com", "fabrikam.com") for name in ("In from AD - InetOrgPerson Exchange", EXCHANGE)
    ]
    plan = plan_for(EXAMPLE, target)
    returned = sorted(s.id for s in plan.steps if s.id.endswith(".remove-returned"))
    assert returned == sorted(f"rule[{name} ({forest})].remove-returned" for forest in ("contoso.com", "fabrikam.com") for name in ("In from AD - InetOrgPerson Exchange", EXCHANGE))


def test_an_upgrade_restores_a_stock_rule_deleted_on_one_connector_only():
    """The other connector's rule carries the same tag: it must not hide the missing one."""
    lab = scenario.build("two-forest", users=4)
    fabrikams = next(r for r in lab.server.rules if r.name == EXCHANGE and r.connector == scenario.FABRIKAM_CONNECTOR)
    lab.remove_rule(fabrikams.identifier)
    (restored,) = lab.upgrade()
    assert restored.identifier == fabrikams.identifier and restored.connector == scenario.FABRIKAM_CONNECTOR
