"""The GitHub Actions workflows in docs/ci, parsed with PyYAML: what makes them hold (issue 15:
pinned actions, least permissions, no artifact in the workspace, hashed installs, the signing
key only where plans are made on main and applied), and every syncprep command in them parsed
by the real command-line parser (so a renamed flag breaks this test, not a team's CI)."""

import re
import shlex

import pytest
import yaml
from packaging.requirements import Requirement

from conftest import ROOT
from reconciler.cli.command import build_parser as _parser
from reconciler.markdown import MARKER

CI = ROOT / "docs" / "ci"
WORKFLOWS = ("plan.yml", "apply.yml", "drift.yml")
SIGNING_KEY = "SYNCPREP_PLAN_SIGNING_KEY"
SECRETS = {"SYNCPREP_WINRM_USERNAME", "SYNCPREP_WINRM_PASSWORD", SIGNING_KEY}
PINNED = re.compile(r"^[\w.-]+/[\w.-]+(?:/[\w./-]+)?@[0-9a-f]{40}$")


def workflow(name):
    doc = yaml.safe_load((CI / name).read_text())
    doc["on"] = doc.pop(True, doc.get("on"))  # YAML 1.1 reads the key "on" as true
    return doc


def jobs(doc):
    return doc["jobs"]


def all_steps(doc):
    return [step for job in jobs(doc).values() for step in job["steps"]]


def step(doc, job, **match):
    return next(s for s in jobs(doc)[job]["steps"] if all(str(s.get(k, "")).startswith(v) for k, v in match.items()))


# ---------------------------------------------------------------------------- what makes them hold


@pytest.mark.parametrize("name", WORKFLOWS)
def test_every_action_is_pinned_by_commit(name):
    text = (CI / name).read_text()
    uses = [s["uses"] for s in all_steps(workflow(name)) if "uses" in s]
    assert uses
    for use in uses:
        assert PINNED.match(use), f"{name}: {use} is not pinned by a full commit id"
        # The version the commit is, for the people who update it.
        assert re.search(rf"uses: {re.escape(use)} # v\d+\.\d+\.\d+$", text, re.M), use


@pytest.mark.parametrize("name", WORKFLOWS)
def test_least_permissions_nothing_by_default_and_a_block_on_every_job(name):
    doc = workflow(name)
    assert doc["permissions"] == {}
    for job_name, job in jobs(doc).items():
        assert isinstance(job.get("permissions"), dict) and job["permissions"], f"{name}: job {job_name} has no permissions block"
        assert set(job["permissions"].values()) <= {"read", "write"}
        assert not any(v == "write" for k, v in job["permissions"].items() if k not in ("pull-requests", "issues", "id-token")), (name, job_name)


@pytest.mark.parametrize("name", WORKFLOWS)
def test_fresh_runners_and_checkouts_that_keep_no_token(name):
    for job_name, job in jobs(workflow(name)).items():
        # Hosted: a fresh machine per job, so pull-request code cannot leave files for apply.
        assert job["runs-on"] == "ubuntu-latest", f"{name}: {job_name}"
        for s in job["steps"]:
            if s.get("uses", "").startswith("actions/checkout@"):
                assert s["with"]["persist-credentials"] is False, f"{name}: {job_name}"


@pytest.mark.parametrize("name", WORKFLOWS)
def test_no_artifact_is_extracted_into_the_workspace(name):
    for s in all_steps(workflow(name)):
        if s.get("uses", "").startswith("actions/download-artifact@"):
            assert s["with"]["path"].startswith("${{ runner.temp }}/"), f"{name}: {s.get('name')} extracts into the workspace"


@pytest.mark.parametrize("name", WORKFLOWS)
def test_dependencies_come_from_the_hashed_lock_file_outside_the_workspace(name):
    for job_name, job in jobs(workflow(name)).items():
        runs = [s["run"] for s in job["steps"] if "run" in s]
        pip = [line.strip() for run in runs for line in run.splitlines() if "pip" in line and "install" in line]
        if not any(syncprep_commands(run) for run in runs):
            # The fleet's jobs (the matrix, the table) run fleet.py, standard library only.
            assert not pip and all("syncprep " not in run or "fleet.py" in run for run in runs), f"{name}: {job_name}"
            continue
        assert pip, f"{name}: {job_name} installs nothing"
        assert '"$RUNNER_TEMP/venv/bin/pip" install -q --require-hashes -r requirements.lock' in pip
        assert '"$RUNNER_TEMP/venv/bin/pip" install -q --no-deps .' in pip
        assert all("--require-hashes" in line or "--no-deps" in line for line in pip), pip
        assert not any(" -e " in line for line in pip)


@pytest.mark.parametrize("name", WORKFLOWS)
def test_secrets_only_as_environment_variables_never_echoed(name):
    text = (CI / name).read_text()
    doc = workflow(name)
    for line in text.splitlines():
        if re.search(r"\$\{\{[^}]*secrets\.", line):
            match = re.fullmatch(r"\s+(\w+): \$\{\{ secrets\.(\w+) \}\}", line)
            assert match and match.group(1) == match.group(2) and match.group(1) in SECRETS, line
    for s in all_steps(doc):
        env = s.get("env") or {}
        if any("secrets." in str(v) for v in env.values()):
            assert "run" in s and "syncprep" in s["run"], s.get("name")
            # Where the credentials may go: the environment's variable, not the desired-state file.
            assert env["SYNCPREP_ALLOW_ENDPOINTS"] == "${{ vars.SYNCPREP_ALLOW_ENDPOINTS }}", s.get("name")
        for block in (s.get("run", ""), (s.get("with") or {}).get("script", "")):
            assert "secrets." not in block
            assert not any(secret in block for secret in SECRETS), s.get("name")
    assert "set -x" not in text


def test_the_signing_key_is_only_where_main_is_planned_and_where_plans_are_applied():
    holders = []
    for name in WORKFLOWS:
        for job_name, job in jobs(workflow(name)).items():
            if any(SIGNING_KEY in (s.get("env") or {}) for s in job["steps"]):
                holders.append((name, job_name, job["environment"]))
    assert holders == [("plan.yml", "main", "syncprep-${{ matrix.target }}-sign"), ("apply.yml", "apply", "syncprep-${{ matrix.target }}")]
    plan = workflow("plan.yml")
    assert jobs(plan)["main"]["if"].startswith("github.event_name == 'push' && github.ref == 'refs/heads/main'")
    assert jobs(plan)["review"]["environment"] == "syncprep-${{ matrix.target }}-plan"
    assert plan["on"]["push"]["branches"] == ["main"]


def test_apply_takes_only_the_plan_of_main_s_current_commit_from_the_plan_workflow():
    doc = workflow("apply.yml")
    assert doc["on"]["workflow_run"] == {"workflows": ["syncprep plan"], "types": ["completed"], "branches": ["main"]}
    job = jobs(doc)["apply"]
    assert job["environment"] == "syncprep-${{ matrix.target }}"
    gate = jobs(doc)["check"]
    assert "github.event.workflow_run.event == 'push'" in gate["if"] and "github.ref == 'refs/heads/main'" in gate["if"]
    assert job["needs"] == "check"
    check = step(doc, "check", id="find")["with"]["script"]
    for condition in (
        'run.path !== ".github/workflows/syncprep-plan.yml"',
        'run.event !== "push"',
        'run.head_branch !== "main"',
        "run.head_repository.full_name !== `${owner}/${repo}`",
        'run.conclusion !== "success"',
        "run.head_sha !== main",
    ):
        assert condition in check
    names = [s.get("name") or s.get("uses") for s in job["steps"]]
    # Installed before anything is downloaded; the checkout is the planned commit.
    assert names.index("Install syncprep (hashed lock file)") < names.index("Download the plan (outside the workspace)")
    checkout = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/checkout@"))
    assert checkout["with"]["ref"] == "${{ needs.check.outputs.sha }}"
    download = step(doc, "apply", uses="actions/download-artifact@")
    assert download["with"]["name"] == "syncprep-plan-${{ matrix.target }}" and download["with"]["run-id"] == "${{ needs.check.outputs.run_id }}"
    apply_step = step(doc, "apply", name="Apply")
    assert apply_step["env"]["APPROVE_IRREVERSIBLE"] == "${{ github.event_name == 'workflow_dispatch' && inputs.approve_irreversible }}"
    for line in apply_step["run"].splitlines():
        if "--approve-irreversible" in line:
            assert line.startswith('if [ "$APPROVE_IRREVERSIBLE" = "true" ]')
    assert doc["on"]["workflow_dispatch"]["inputs"]["approve_irreversible"]["default"] is False
    assert job["concurrency"] == {"group": "syncprep-apply-${{ matrix.target }}", "cancel-in-progress": False}
    assert "`syncprep-plan.yml`" in (CI / "README.md").read_text()


def test_the_signed_plan_is_uploaded_only_by_the_main_job():
    doc = workflow("plan.yml")
    uploads = [(job_name, s) for job_name, job in jobs(doc).items() for s in job["steps"] if s.get("uses", "").startswith("actions/upload-artifact@")]
    assert [job_name for job_name, _ in uploads] == ["main"]
    assert uploads[0][1]["with"]["name"] == "syncprep-plan-${{ matrix.target }}" and uploads[0][1]["with"]["path"] == "${{ runner.temp }}/plan.json"


def test_plan_posts_one_comment_found_by_the_marker():
    doc = workflow("plan.yml")
    assert doc["on"]["pull_request"]["paths"] == ["desired-state/**"]
    assert jobs(doc)["review"]["permissions"] == {"contents": "read", "pull-requests": "write", "id-token": "write"}
    script = step(doc, "review", uses="actions/github-script@")["with"]["script"]
    # One comment per target: its own marker first, then show --markdown's (MARKER).
    target_marker = MARKER.replace("-->", ":").rstrip(": ")
    assert "const marker = `" + target_marker + ":${process.env.TARGET} -->`;" in script
    assert "updateComment" in script and "createComment" in script
    render = step(doc, "review", name="Render the comment")["run"]
    assert render.startswith('echo "' + target_marker + ':$TARGET -->" > plan.md')
    # The failure note keeps the marker, so it replaces the old plan instead of adding a comment.
    failure = step(doc, "review", name="Explain a failed plan")
    assert target_marker + ":$TARGET -->" in failure["run"] and "${{" not in failure["run"]
    assert '-ne 0 ] && [ "$code" -ne 2 ]' in step(doc, "review", id="plan")["run"]


def test_drift_runs_nightly_masks_users_and_tells_the_exit_codes_apart():
    doc = workflow("drift.yml")
    assert doc["on"]["schedule"][0]["cron"]
    script = step(doc, "drift", id="drift")["run"]
    assert "0|2) ;;" in script and "3) echo \"::warning" in script and '*) exit "$code"' in script
    issue = step(doc, "summary", uses="actions/github-script@")
    assert "issues.create(" in issue["with"]["script"] and "issues.update(" in issue["with"]["script"]
    assert ["drift", "desired-state/example.toml", "--markdown", "--mask-users"] in all_commands("drift.yml")
    assert ["drift", "desired-state/example.toml", "--json"] in all_commands("drift.yml")


# ---------------------------------------------------------------------------- the commands


_COMMAND = re.compile(r"(?:^|[;&|]\s*|\bthen\s+|\belse\s+)(?:\.venv/bin/)?syncprep\s+(.*)$")


def syncprep_commands(script):
    """Every syncprep invocation in a shell script, as argv, with variables filled in
    (an array takes every value it is ever given, so each flag is parsed at least once)."""
    script = re.sub(r"\\\n\s*", " ", script)
    arrays = {}
    for name, items in re.findall(r"(\w+)\+?=\(([^)]*)\)", script):
        arrays.setdefault(name, []).extend(shlex.split(items))
    commands = []
    for line in script.splitlines():
        match = _COMMAND.search(line.strip())
        if not match:
            continue
        # The command ends at a redirection, a pipe or a list operator.
        text = re.split(r"\s(?:\d?>>?|\||;|&&|\|\|)\s?", " " + match.group(1))[0]
        argv = []
        for token in shlex.split(text):
            array = re.fullmatch(r"\$\{(\w+)\[@\]\}", token)
            if array:
                argv += arrays[array.group(1)]
            elif token.startswith("$"):
                argv.append("plan.json" if "plan.json" in token else "desired-state/example.toml")
            else:
                argv.append(token)
        commands.append(argv)
    return commands


def all_commands(name):
    return [argv for s in all_steps(workflow(name)) if "run" in s for argv in syncprep_commands(s["run"])]


@pytest.mark.parametrize("name", WORKFLOWS)
def test_every_syncprep_command_is_one_the_cli_knows(name, capsys):
    commands = all_commands(name)
    assert commands, f"{name} runs no syncprep command"
    for argv in commands:
        try:
            _parser().parse_args(argv)
        except SystemExit:
            pytest.fail(f"{name}: syncprep {' '.join(argv)}: {capsys.readouterr().err.strip()}")


def test_the_commands_are_the_documented_ones():
    plan = all_commands("plan.yml")
    assert ["plan", "desired-state/example.toml", "-out", "plan.json", "--detailed-exitcode"] in plan
    assert ["show", "plan.json", "--markdown"] in plan and ["show", "plan.json", "--markdown", "--mask-users"] in plan
    apply = all_commands("apply.yml")
    assert [
        "apply", "plan.json", "--desired", "desired-state/example.toml", "--auto-approve", "--approve-irreversible", "--approve-threshold-raise", "--force"
    ] in apply


# ---------------------------------------------------------------------------- the lock files


def locked(name):
    text = (ROOT / name).read_text()
    pins = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        match = re.match(r"([A-Za-z0-9_.-]+)==(\S+)", block)
        if match:
            assert "--hash=sha256:" in block, f"{name}: {match.group(1)} has no hash"
            pins[match.group(1).lower().replace("_", "-")] = match.group(2)
    return pins


#: Extras deliberately left out of both lock files, and why (pyproject says the same).
UNLOCKED_EXTRAS = {
    "kerberos": "gssapi and krb5 build against the system's Kerberos libraries (libkrb5-dev and a compiler)",
    "credssp": "only for operators who choose WinRM CredSSP; no workflow in docs/ci uses it",
}


def test_every_extra_is_locked_or_left_out_on_purpose():
    """A new extra must go into a lock file or be named here with its reason: none is skipped silently."""
    import tomli

    extras = set(tomli.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    assert extras - set(UNLOCKED_EXTRAS) == {"test"}
    assert set(UNLOCKED_EXTRAS) <= extras, "an unlocked extra no longer exists: drop it from UNLOCKED_EXTRAS"


@pytest.mark.parametrize("name, extras", [("requirements.lock", ()), ("requirements-test.lock", ("test",))])
def test_the_lock_files_pin_every_dependency_with_hashes(name, extras):
    """Kept current: regenerate with pip-compile when pyproject's dependencies change (see README)."""
    import tomli

    project = tomli.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [*project["dependencies"], *(r for extra in extras for r in project["optional-dependencies"][extra])]
    pins = locked(name)
    for text in wanted:
        requirement = Requirement(text)
        key = requirement.name.lower().replace("_", "-")
        assert key in pins, f"{name} does not pin {requirement.name}"
        assert requirement.specifier.contains(pins[key], prereleases=True), f"{name}: {key}=={pins[key]} does not satisfy {text}"
    assert set(locked("requirements.lock").items()) <= set(locked("requirements-test.lock").items())


# ---------------------------------------------------------------------------- workload identity


@pytest.mark.parametrize("name", WORKFLOWS)
def test_graph_signs_in_with_the_job_s_oidc_token_and_no_client_secret(name):
    text = (CI / name).read_text()
    assert "AZURE_CLIENT_SECRET" not in text
    for job_name, job in jobs(workflow(name)).items():
        env = {k: v for s in job["steps"] for k, v in (s.get("env") or {}).items()}
        if "AZURE_CLIENT_ID" in env:
            assert env["AZURE_CLIENT_ID"] == "${{ vars.AZURE_CLIENT_ID }}" and env["AZURE_TENANT_ID"] == "${{ vars.AZURE_TENANT_ID }}"
            assert job["permissions"].get("id-token") == "write", f"{name}: {job_name} signs in to Graph without id-token: write"
        else:
            assert "id-token" not in job["permissions"], f"{name}: {job_name} asks for an OIDC token it does not use"
    readme = (CI / "README.md").read_text()
    assert 'auth = "workload-identity"' in readme and "id-token: write" in readme


# ---------------------------------------------------------------------------- the fleet's matrix


def fleet():
    import importlib.util

    spec = importlib.util.spec_from_file_location("fleet", CI / "fleet.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def git(repo, *args):
    import subprocess

    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com", "HOME": str(repo)}
    return subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def sample(tmp_path):
    """An MSP's repository: one desired-state file per customer target, and other files."""
    repo = tmp_path / "msp"
    (repo / "desired-state").mkdir(parents=True)
    for name in ("contoso", "fabrikam", "northwind"):
        (repo / "desired-state" / f"{name}.toml").write_text(f"# {name}\n")
    (repo / "README.md").write_text("fleet\n")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "fleet")
    base = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "-b", "change")
    (repo / "desired-state" / "fabrikam.toml").write_text("# fabrikam, changed\n")
    (repo / "desired-state" / "tailspin.toml").write_text("# a new customer\n")
    (repo / "desired-state" / "notes").mkdir()
    (repo / "desired-state" / "notes" / "ignored.toml").write_text("# not a target\n")
    (repo / "desired-state" / "northwind.toml").unlink()
    (repo / "README.md").write_text("fleet, changed\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "change")
    return repo, base, git(repo, "rev-parse", "HEAD")


def test_the_matrix_is_the_targets_a_change_adds_or_changes(sample, tmp_path, monkeypatch, capsys):
    import json

    repo, base, head = sample
    module = fleet()
    assert module.changed_files(repo, base, head) == ["desired-state/fabrikam.toml", "desired-state/tailspin.toml"]
    output = tmp_path / "github_output"
    monkeypatch.setenv("GITHUB_OUTPUT", str(output))
    assert module.main(["targets", "--root", str(repo), "--changed", base, head]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == {"include": [{"target": "fabrikam", "file": "desired-state/fabrikam.toml"}, {"target": "tailspin", "file": "desired-state/tailspin.toml"}]}
    assert output.read_text().splitlines() == [f"matrix={json.dumps(printed, separators=(',', ':'))}", "count=2"]
    # The nightly drift: every target there is now (the deleted one is gone).
    assert module.matrix(module.all_files(repo))["include"] == [
        {"target": "contoso", "file": "desired-state/contoso.toml"},
        {"target": "fabrikam", "file": "desired-state/fabrikam.toml"},
        {"target": "tailspin", "file": "desired-state/tailspin.toml"},
    ]
    # A change that touches no target's file plans nothing.
    assert module.changed_files(repo, head, head) == []


def test_a_file_that_cannot_name_an_environment_is_refused(sample, capsys):
    repo, _base, _head = sample
    (repo / "desired-state" / "Big_Customer.toml").write_text("")
    assert fleet().main(["targets", "--root", str(repo)]) == 1
    assert "Big_Customer.toml: a target's file is named <target>.toml" in capsys.readouterr().err


def test_the_jobs_run_one_per_target_with_its_environment_and_concurrency_group():
    """The job list: every job that touches a target takes it from the matrix fleet.py makes."""
    expected = {
        ("plan.yml", "review"): ("syncprep-${{ matrix.target }}-plan", "syncprep-plan-${{ matrix.target }}-${{ github.event.pull_request.number }}"),
        ("plan.yml", "main"): ("syncprep-${{ matrix.target }}-sign", "syncprep-plan-main-${{ matrix.target }}"),
        ("apply.yml", "apply"): ("syncprep-${{ matrix.target }}", "syncprep-apply-${{ matrix.target }}"),
        ("drift.yml", "drift"): ("syncprep-${{ matrix.target }}-plan", "syncprep-drift-${{ matrix.target }}"),
    }
    seen = {}
    for name in WORKFLOWS:
        for job_name, job in jobs(workflow(name)).items():
            if "strategy" not in job:
                assert "environment" not in job, f"{name}: {job_name} has credentials but no target"
                continue
            assert job["strategy"]["fail-fast"] is False, "one target's failure does not stop the others"
            assert job["strategy"]["matrix"].startswith("${{ fromJSON(needs.")
            seen[(name, job_name)] = (job["environment"], job["concurrency"]["group"])
            assert job.get("env", {}).get("SYNCPREP_FILE") in (None, "${{ matrix.file }}")
    assert seen == expected
    for name in ("plan.yml", "drift.yml"):
        fleet_step = step(workflow(name), "targets", id="fleet")
        assert fleet_step["run"].startswith("python3 .github/syncprep/fleet.py targets")
    assert "--changed" in step(workflow("plan.yml"), "targets", id="fleet")["run"]


def test_the_nightly_table_covers_the_fleet(tmp_path):
    import json

    folder = tmp_path / "drift"
    for target, code, report in (
        ("contoso", 0, {"drift": [], "unknown": []}),
        ("fabrikam", 2, {"drift": [{"resource": "rule", "what": "stock rule back: In from AD - User Exchange"}, {"resource": "licence", "what": "user07@fabrikam.com licensed without a mailbox"}], "unknown": []}),
        ("northwind", 3, {"drift": [], "unknown": ["recycle bin"]}),
    ):
        (folder / f"syncprep-drift-{target}").mkdir(parents=True)
        (folder / f"syncprep-drift-{target}" / f"{target}.exit").write_text(f"{code}\n")
        (folder / f"syncprep-drift-{target}" / f"{target}.json").write_text(json.dumps(report))
    (folder / "missing").mkdir()
    (folder / "missing" / "tailspin.exit").write_text("1\n")
    text, anything = fleet().summary(folder)
    assert anything
    rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith(("| target", "| ---"))]
    assert rows == [
        "| contoso | in sync | — |",
        "| fabrikam | drift | rule: stock rule back: In from AD - User Exchange; licence: a user licensed without a mailbox |",
        "| northwind | unknown | could not read recycle bin |",
        "| tailspin | unknown (the job failed) | — |",
    ]
    shown, _ = fleet().summary(folder, mask_users=False)
    assert "user07@\u200bfabrikam.com" in shown
