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
from reconciler.cli import _parser
from reconciler.markdown import MARKER

CI = ROOT / "docs" / "ci"
WORKFLOWS = ("plan.yml", "apply.yml", "drift.yml")
SIGNING_KEY = "SYNCPREP_PLAN_SIGNING_KEY"
SECRETS = {"AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET", "SYNCPREP_WINRM_USERNAME", "SYNCPREP_WINRM_PASSWORD", SIGNING_KEY}
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
        assert not any(v == "write" for k, v in job["permissions"].items() if k not in ("pull-requests", "issues")), (name, job_name)


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
    assert holders == [("plan.yml", "main", "syncprep-sign"), ("apply.yml", "apply", "syncprep-production")]
    plan = workflow("plan.yml")
    assert jobs(plan)["main"]["if"] == "github.event_name == 'push' && github.ref == 'refs/heads/main'"
    assert jobs(plan)["review"]["environment"] == "syncprep-plan"
    assert plan["on"]["push"]["branches"] == ["main"]


def test_apply_takes_only_the_plan_of_main_s_current_commit_from_the_plan_workflow():
    doc = workflow("apply.yml")
    assert doc["on"]["workflow_run"] == {"workflows": ["syncprep plan"], "types": ["completed"], "branches": ["main"]}
    job = jobs(doc)["apply"]
    assert job["environment"] == "syncprep-production"
    assert "github.event.workflow_run.event == 'push'" in job["if"] and "github.ref == 'refs/heads/main'" in job["if"]
    check = step(doc, "apply", id="find")["with"]["script"]
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
    assert checkout["with"]["ref"] == "${{ steps.find.outputs.sha }}"
    download = step(doc, "apply", uses="actions/download-artifact@")
    assert download["with"]["name"] == "syncprep-plan" and download["with"]["run-id"] == "${{ steps.find.outputs.run_id }}"
    apply_step = step(doc, "apply", name="Apply")
    assert apply_step["env"]["APPROVE_IRREVERSIBLE"] == "${{ github.event_name == 'workflow_dispatch' && inputs.approve_irreversible }}"
    for line in apply_step["run"].splitlines():
        if "--approve-irreversible" in line:
            assert line.startswith('if [ "$APPROVE_IRREVERSIBLE" = "true" ]')
    assert doc["on"]["workflow_dispatch"]["inputs"]["approve_irreversible"]["default"] is False
    assert doc["concurrency"]["cancel-in-progress"] is False
    assert "`syncprep-plan.yml`" in (CI / "README.md").read_text()


def test_the_signed_plan_is_uploaded_only_by_the_main_job():
    doc = workflow("plan.yml")
    uploads = [(job_name, s) for job_name, job in jobs(doc).items() for s in job["steps"] if s.get("uses", "").startswith("actions/upload-artifact@")]
    assert [job_name for job_name, _ in uploads] == ["main"]
    assert uploads[0][1]["with"]["name"] == "syncprep-plan" and uploads[0][1]["with"]["path"] == "${{ runner.temp }}/plan.json"


def test_plan_posts_one_comment_found_by_the_marker():
    doc = workflow("plan.yml")
    assert doc["on"]["pull_request"]["paths"] == ["desired-state/**"]
    assert jobs(doc)["review"]["permissions"] == {"contents": "read", "pull-requests": "write"}
    script = step(doc, "review", uses="actions/github-script@")["with"]["script"]
    assert f'"{MARKER}"' in script and "updateComment" in script and "createComment" in script
    # The failure note keeps the marker, so it replaces the old plan instead of adding a comment.
    failure = step(doc, "review", name="Explain a failed plan")
    assert MARKER in failure["run"] and "${{" not in failure["run"]
    assert '-ne 0 ] && [ "$code" -ne 2 ]' in step(doc, "review", id="plan")["run"]


def test_drift_runs_nightly_masks_users_and_tells_the_exit_codes_apart():
    doc = workflow("drift.yml")
    assert doc["on"]["schedule"][0]["cron"]
    script = step(doc, "drift", id="drift")["run"]
    assert "0|2) ;;" in script and "3) echo \"::warning" in script and '*) exit "$code"' in script
    issue = step(doc, "drift", uses="actions/github-script@")
    assert issue["if"] == "steps.drift.outputs.code == '2' || steps.drift.outputs.code == '0'"
    assert "issues.create(" in issue["with"]["script"] and "issues.update(" in issue["with"]["script"]
    assert ["drift", "desired-state/example.toml", "--markdown", "--mask-users"] in all_commands("drift.yml")


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
