"""Apply proven under faults (issue 7): kills, transient errors, concurrent applies, bad input, secrets.

The figures (faults injected, runs resumed, runs converged, data lost) are printed
at the end of the test session.
"""

import json
import os
import random
from collections import Counter
from pathlib import Path

import pytest

from conftest import EXAMPLE, FIGURES, ROOT, plan_for
from faults import harness as faults_harness
from providers.lab import scenario, store
from providers.lab.provider import LabServer, LabTarget, LabTenant
from reconciler.apply import apply_plan
from reconciler.errors import TransientError
from reconciler.journal import TargetLock, target_slug
from reconciler.loader import load_desired
from reconciler.provider import Target

REBUILD = ROOT / "desired-state" / "rebuild.toml"
REBUILD_FLAGS = ("--approve-irreversible", "--force")


def fresh_lab(path):
    store.save(scenario.build(users=20), path)


def harness(tmp_path, kill, *args):
    """syncprep ARGS --lab tmp_path/lab.json, killed as ``kill`` says, in a process of its own
    (forked from this one: a new interpreter each time cost this suite most of its time)."""
    lab = tmp_path / "lab.json"
    env = {**os.environ, "SYNCPREP_FAULT_LAB": str(lab), "NO_COLOR": "1"}
    return faults_harness.run_forked(tmp_path / "ops.jsonl", kill, [*args, "--lab", lab], cwd=tmp_path, env=env, timeout=120)


def oplog(tmp_path):
    path = tmp_path / "ops.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def per_user(ops, name):
    counts = Counter()
    for op in ops:
        if op["op"] == name:
            counts.update(op["users"])
    return counts


def assert_converged(tmp_path, desired_path):
    lab = store.load(tmp_path / "lab.json")
    target = LabTarget(lab)
    assert plan_for(desired_path, target).steps == (), "the resumed run converged"
    assert lab.server.sync_cycle_enabled
    ops = oplog(tmp_path)
    assert max(per_user(ops, "AssignLicense").values(), default=0) <= 1, "no licence assigned twice"
    assert max(per_user(ops, "RemoveLicense").values(), default=0) <= 1, "no licence removed twice"
    purged = per_user(ops, "PurgeDeletedUsers")
    hybrid = {f"user{i:02d}@contoso.com" for i in range(1, 21)} | {"contractor01@contoso.com"}
    assert set(purged) <= hybrid, "no user purged that the plan did not name"
    assert max(purged.values(), default=0) <= 1
    assert lab.cloud_user("admin@contoso.onmicrosoft.com") is not None and lab.cloud_user("svc01@contoso.com") is not None
    return lab


def count_points(tmp_path, desired_path, flags):
    """Run once without faults: how many step boundaries and provider calls there are."""
    fresh_lab(tmp_path / "lab.json")
    result = harness(tmp_path, "none", "apply", desired_path, "--auto-approve", *flags)
    assert result.returncode == 4, result.stderr  # 4: user07 (no usage location) and user20 (no unit) end without a licence
    ops = oplog(tmp_path)
    journal = next(tmp_path.glob("*.journal")).read_text().splitlines()
    boundaries = sum(1 for line in journal if json.loads(line)["event"] == "step-end")
    return boundaries, len(ops)


@pytest.mark.parametrize("desired_path, flags", [(EXAMPLE, ()), (REBUILD, REBUILD_FLAGS)], ids=["solution-1", "solution-2"])
def test_a_kill_at_every_step_boundary_and_inside_every_step_resumes_to_the_desired_state(tmp_path, desired_path, flags):
    boundaries, calls = count_points(tmp_path / "count", desired_path, flags) if (tmp_path / "count").mkdir() is None else (0, 0)
    points = [f"boundary:{n}" for n in range(1, boundaries + 1)] + [f"inside:{n}" for n in range(1, calls + 1)]
    assert len(points) > 20
    for point in points:
        case = tmp_path / point.replace(":", "-")
        case.mkdir()
        fresh_lab(case / "lab.json")
        killed = harness(case, point, "apply", desired_path, "--auto-approve", *flags)
        assert killed.returncode == -9, (point, killed.stdout[-2000:], killed.stderr[-2000:])
        FIGURES["faults injected"] += 1
        resumed = harness(case, "none", "apply", desired_path, "--resume", "--auto-approve", *flags)
        FIGURES["runs resumed"] += 1
        # 0 when nothing was left to do, else 4 (user07 and user20 end without a licence)
        assert resumed.returncode in (0, 4), (point, resumed.stdout[-3000:], resumed.stderr[-2000:])
        assert "Traceback" not in resumed.stderr
        assert_converged(case, desired_path)
        FIGURES["runs converged"] += 1


def test_after_a_kill_plan_and_drift_say_the_scheduler_was_left_paused(tmp_path, cli):
    fresh_lab(tmp_path / "lab.json")
    killed = harness(tmp_path, "boundary:1", "apply", EXAMPLE, "--auto-approve")
    assert killed.returncode == -9
    FIGURES["faults injected"] += 1
    code, _out, err = cli("plan", EXAMPLE, "--lab", tmp_path / "lab.json")
    assert "it had paused the sync scheduler, which is still off" in err and "apply --resume" in err
    code, out, err = cli("drift", EXAMPLE, "--lab", tmp_path / "lab.json", "--json")
    assert code == 2 and "had paused the sync scheduler" in json.loads(out)["interrupted_apply"]


class Flaky:
    """Wraps a lab provider: a share of calls fail transiently, before or after taking effect."""

    def __init__(self, inner, rng, share, counts):
        self.inner, self.rng, self.share, self.counts = inner, rng, share, counts

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def apply(self, operation):
        roll = self.rng.random()
        if roll < self.share / 2:
            self.counts["faults injected"] += 1
            raise TransientError(self.inner.name, type(operation).__name__, "503 Service Unavailable (injected)")
        outcome = self.inner.apply(operation)
        if roll < self.share:
            self.counts["faults injected"] += 1
            raise TransientError(self.inner.name, type(operation).__name__, "connection dropped after the request (injected)")
        return outcome


class FlakyServer(Flaky, LabServer):
    pass


class FlakyTenant(Flaky, LabTenant):
    pass


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("desired_path", [EXAMPLE, REBUILD], ids=["solution-1", "solution-2"])
def test_transient_errors_on_a_share_of_calls_still_converge_without_doing_anything_twice(seed, desired_path, monkeypatch):
    from providers.lab.world import Lab

    lab = scenario.build(users=20)
    applied = Counter()
    for name in ("assign_license", "remove_license", "purge_deleted_user"):
        original = getattr(Lab, name)

        def counting(self, key, *rest, _original=original, _name=name):
            result = _original(self, key, *rest)
            applied[(_name, key)] += 1
            return result

        monkeypatch.setattr(Lab, name, counting)
    rng = random.Random(seed)
    counts = Counter()
    server = FlakyServer.__new__(FlakyServer)
    Flaky.__init__(server, LabServer(lab), rng, 0.3, counts)
    tenant = FlakyTenant.__new__(FlakyTenant)
    Flaky.__init__(tenant, LabTenant(lab), rng, 0.3, counts)
    target = Target(server, tenant)
    target.sleep = lambda seconds: None
    desired = load_desired(desired_path)
    report = apply_plan(plan_for(desired, target), desired, target, approvals={"irreversible"}, force=True, retries=6)
    assert report.ok, [r for r in report.results if r.status.value != "done"]
    assert plan_for(desired, LabTarget(lab)).steps == ()
    assert max(applied.values()) == 1, "no change made twice"
    FIGURES["faults injected"] += counts["faults injected"]
    FIGURES["runs converged"] += 1


def test_a_second_apply_is_refused_while_one_holds_the_lock(tmp_path, cli):
    lab_path = tmp_path / "lab.json"
    fresh_lab(lab_path)
    key = LabTarget(store.load(lab_path), lab_path).key
    lock_path = tmp_path / f"{target_slug(key)}.lock"
    with TargetLock(lock_path, "apply desired-state/example.toml") as held:
        code, _out, err = cli("apply", EXAMPLE, "--auto-approve", "--lab", lab_path)
        assert code == 1
        assert f"another apply holds the lock: id {held.id}" in err and f"syncprep force-unlock {held.id}" in err
        code, _out, err = cli("force-unlock", "wrong-id", "--lab", lab_path)
        assert code == 1 and f"the lock's id is {held.id}" in err
    # A lock left by a process that is gone: refused, said so, released by id.
    lock_path.write_text(json.dumps({"id": "deadbeef", "pid": 2**22 + 12345, "host": os.uname().nodename, "user": "x", "since": "2026-11-28T01:00:00Z"}))
    code, _out, err = cli("apply", EXAMPLE, "--auto-approve", "--lab", lab_path)
    assert code == 1 and "that process is gone" in err
    assert cli("force-unlock", "deadbeef", "--yes", "--lab", lab_path)[0] == 0
    assert cli("apply", EXAMPLE, "--auto-approve", "--lab", lab_path)[0] == 4  # 4: user07 (no usage location) and user20 (no unit) end without a licence


def test_two_applies_started_together_do_not_both_run(tmp_path):
    fresh_lab(tmp_path / "lab.json")
    env = {**os.environ, "SYNCPREP_FAULT_LAB": str(tmp_path / "lab.json"), "NO_COLOR": "1"}
    # Two processes at once, forked from this one as harness() forks one (two new interpreters cost 1-2 s of CPU).
    apply = {"oplog_path": tmp_path / "ops.jsonl", "kill": "none", "args": ["apply", EXAMPLE, "--auto-approve", "--lab", tmp_path / "lab.json"], "cwd": tmp_path, "env": env}
    results = [(done.returncode, done.stderr) for done in faults_harness.run_forked_together([apply, apply], timeout=120)]
    FIGURES["concurrent applies"] += 2
    codes = [code for code, _err in results]
    # One applies (4: user07 and user20 end without a licence); the other is refused the
    # lock, or comes after it and finds nothing to do (0).
    assert 4 in codes
    for code, err in results:
        assert code in (0, 4) or "another apply holds the lock" in err
    assert_converged(tmp_path, EXAMPLE)


BAD_INPUT = {
    "malformed.toml": (b"[scheduler\nsync_cycle_enabled = true\n", "invalid TOML"),
    "wrong-type.toml": (b"[scheduler]\nsync_cycle_enabled = 1\n", "expected true or false"),
    "unknown-key.toml": (b"[scheduler]\nsync_cycle_enable = true\n", "unknown key"),
    "precedences.toml": (
        b'[[rules]]\nname = "A"\nkind = "replacement"\nprecedence = 108\n  [[rules.flows]]\n  destination = "msExchMailboxGuid"\n  flow_type = "Expression"\n  expression = "NULL"\n'
        b'[[rules]]\nname = "B"\nkind = "replacement"\nprecedence = 108\n  [[rules.flows]]\n  destination = "msExchMailboxGuid"\n  flow_type = "Expression"\n  expression = "NULL"\n',
        "taken twice",
    ),
    "upn.toml": (b'[[licenses]]\nsku = "ENTERPRISEPACK"\nusers = ["not-an-upn"]\n', "not a valid user principal name"),
    "huge.toml": (b"#" * (2 * 1024 * 1024), "over the 1048576-byte limit"),
    "latin1.toml": (b'[[licenses]]\nsku = "ENTERPRISEPACK"\nusers = ["ren\xe9@contoso.com"]\n', "not UTF-8"),
}


@pytest.mark.parametrize("name", sorted(BAD_INPUT))
def test_bad_input_is_one_line_and_changes_nothing(tmp_path, cli, name):
    content, fragment = BAD_INPUT[name]
    lab_path = tmp_path / "lab.json"
    fresh_lab(lab_path)
    before = lab_path.read_bytes()
    bad = tmp_path / name
    bad.write_bytes(content)
    for command in ("plan", "apply"):
        code, out, err = cli(command, bad, "--auto-approve", "--lab", lab_path) if command == "apply" else cli(command, bad, "--lab", lab_path)
        assert code == 1
        lines = err.strip().splitlines()
        assert lines and all(line.startswith("error: ") for line in lines) and "Traceback" not in err
        assert any(fragment in line for line in lines), lines
    assert lab_path.read_bytes() == before
    FIGURES["bad inputs refused"] += 1


@pytest.mark.parametrize(
    "content, fragment",
    [("{corrupt", "invalid JSON"), ('{"format": "syncprep-lab", "version": 7, "lab": {}}', "newer than this syncprep reads")],
    ids=["corrupt", "newer"],
)
def test_a_bad_lab_file_is_one_line_and_left_alone(tmp_path, cli, content, fragment):
    lab_path = tmp_path / "lab.json"
    lab_path.write_text(content)
    code, _out, err = cli("apply", EXAMPLE, "--auto-approve", "--lab", lab_path)
    assert code == 1 and err.count("\n") == 1 and fragment in err
    assert lab_path.read_text() == content
    FIGURES["bad inputs refused"] += 1


SECRETS = {
    "AZURE_CLIENT_SECRET": "azure-S3cr3t-9f2b71",
    "SYNCPREP_WINRM_PASSWORD": "winrm-S3cr3t-c0ffee",
    "SYNCPREP_GRAPH_TOKEN": "eyJ0eXAi-S3cr3t-token",
}


def test_no_secret_from_the_environment_reaches_any_output_or_file(tmp_path, cli, monkeypatch):
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    outputs = []
    for args in (
        ("plan", EXAMPLE),
        ("plan", EXAMPLE, "--json"),
        ("plan", EXAMPLE, "-out", "plan.json"),
        ("show", "plan.json"),
        ("apply", "plan.json", "--desired", EXAMPLE, "--auto-approve"),
        ("drift", EXAMPLE, "--json"),
        ("apply", REBUILD, "--auto-approve", *REBUILD_FLAGS),
        ("lab", "show", "--json"),
        ("validate", ROOT / "tests" / "fixtures" / "invalid" / "secret-in-file.toml"),
    ):
        outputs.extend(cli(*args)[1:])
    files = [p for p in Path(".").rglob("*") if p.is_file()]
    assert any(p.suffix == ".journal" for p in files) and Path("plan.json").exists()
    for value in SECRETS.values():
        assert not any(value in text for text in outputs)
        assert not any(value.encode() in p.read_bytes() for p in files)
    FIGURES["secret scans (clean)"] += 1


def test_until_stops_before_a_step_that_cannot_finish_and_resume_completes(cli):
    cli("lab", "init")
    # Lab time is 22:21; the last full cycle took 6 minutes, so the sync cannot finish by 22:25.
    code, out, _err = cli("apply", EXAMPLE, "--auto-approve", "--until", "22:25")
    assert code == 1
    assert "stopping before 'Run a full (Initial) sync cycle" in out and "Finish with 'syncprep apply --resume'" in out
    lab = store.load(".syncprep/lab.json")
    assert lab.server.sync_cycle_enabled, "stopped safe: the scheduler is on"
    assert any(r.name == "In from AD - User Exchange" and not r.is_standard for r in lab.server.rules)
    code, out, err = cli("apply", EXAMPLE, "--auto-approve", "--resume")
    assert code == 4, err  # 4: user07 (no usage location) and user20 (no unit) end without a licence
    assert "stopped before the end of its plan" in err
    assert cli("plan", EXAMPLE, "--detailed-exitcode")[0] == 0
