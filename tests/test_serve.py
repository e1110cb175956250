"""`syncprep lab serve` with the real providers and the CLI on the other end, over loopback."""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import EXAMPLE
from faults import harness as faults_harness
from providers.lab import store

SECRETS = {"SYNCPREP_GRAPH_TOKEN": "lab-token-5e1f", "SYNCPREP_WINRM_USERNAME": "lab-admin", "SYNCPREP_WINRM_PASSWORD": "lab-pass-77a1"}


def _serve(tmp_path, *options, lab=None):
    """Run `lab serve` on ``lab`` (default: a fresh lab at 600 lab minutes a second with the
    scheduler's own cycles out of the way); yield (tmp_path, env, graph URL, WinRM port, printed text)."""
    from providers.lab import scenario

    if lab is None:
        # Lab time runs fast while served: keep the scheduler's own cycles out of the way,
        # or one may start in the middle of the test's apply (which then, rightly, refuses).
        lab = scenario.build()
        lab.server.sync_interval = 100_000
        lab.server.next_scheduled_at = lab.clock + 100_000
        options = ("--speed", "600", *options)
    store.save(lab, tmp_path / "lab.json")
    env = {**os.environ, **SECRETS, "NO_COLOR": "1"}
    # A process of its own, forked from this one as `run` forks the commands (a new interpreter
    # cost each served test about 0.3 s of CPU); it reads the lab from the file as `lab serve` does.
    server = faults_harness.Forked(["lab", "serve", "--lab", tmp_path / "lab.json", *options], cwd=tmp_path, env=env)
    try:
        lines = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = server.stdout.readline()
            lines.append(line)
            if line.strip().startswith("aad_username"):
                break
        text = "".join(lines)
        graph = re.search(r'endpoint = "(https?://127\.0\.0\.1:\d+/v1\.0)"', text).group(1)
        port = int(re.search(r"port = (\d+)", text).group(1))
        # The endpoints are the operator's to allow: lab serve prints the line that does it.
        allowed = re.search(r"^export SYNCPREP_ALLOW_ENDPOINTS=(\S+)$", text, re.M).group(1)
        assert allowed == f"{graph},http://127.0.0.1:{port}"
        env = {**env, "SYNCPREP_ALLOW_ENDPOINTS": allowed}
        bundle = re.search(r"^export SYNCPREP_CA_BUNDLE=(\S+)$", text, re.M)
        if bundle:
            env["SYNCPREP_CA_BUNDLE"] = bundle.group(1)
        yield tmp_path, env, graph, port, text
    finally:
        # SIGTERM, not SIGINT: a test run started in the background ignores SIGINT.
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)


@pytest.fixture
def served(tmp_path):
    yield from _serve(tmp_path)


@pytest.fixture
def served_h2(tmp_path):
    """Graph over HTTPS with the certificate lab serve made: httpx and the lab agree on HTTP/2."""
    yield from _serve(tmp_path, "--tls")


def remote_file(tmp_path, graph, port):
    body = EXAMPLE.read_text().split("[scheduler]", 1)[1]
    target = (
        f'[target]\nkind = "remote"\n[target.graph]\nendpoint = "{graph}"\nauth = "token-env"\npoll_seconds = 0.5\n'
        f'[target.entra_connect]\nhost = "127.0.0.1"\nport = {port}\nssl = false\nauth = "basic"\npoll_seconds = 0.5\n\n[scheduler]'
    )
    path = tmp_path / "remote.toml"
    path.write_text(target + body)
    return path


def run(env, cwd, *args, timeout=300, fresh=False):
    """``syncprep ARGS`` in ``cwd`` with ``env``, in a process of its own forked from this one
    (which has imported syncprep already: a new interpreter per command cost these tests
    about 0.45 s of CPU each); exit status, stdout and stderr as the script's. ``fresh``:
    the installed script in a new interpreter, which also imports everything anew."""
    if fresh:
        script = Path(sys.executable).parent / "syncprep"
        return subprocess.run([str(script), *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    return faults_harness.run_forked(None, "none", args, cwd=cwd, env=env, timeout=timeout)


def test_lab_serve_prints_the_target_and_no_secret(served):
    _tmp, _env, _graph, _port, text = served
    assert "[target.graph]" in text and "[target.entra_connect]" in text
    assert not any(value in text for value in SECRETS.values())


def test_plan_and_apply_through_the_real_providers_against_the_served_lab(served):
    tmp_path, env, graph, port, _text = served
    desired = remote_file(tmp_path, graph, port)
    plan = run(env, tmp_path, "plan", desired, "--detailed-exitcode", "--show-scripts")
    assert plan.returncode == 2, plan.stderr
    assert "Set-ADSyncScheduler -SyncCycleEnabled $false" in plan.stdout
    assert "Copy the stock rule at temporary precedence 212" in plan.stdout
    applied = run(env, tmp_path, "apply", desired, "--auto-approve")
    assert applied.returncode == 4, applied.stdout[-3000:] + applied.stderr[-2000:]
    assert "19 of 19 mailboxes present" in applied.stdout
    again = run(env, tmp_path, "plan", desired, "--detailed-exitcode")
    assert again.returncode == 0, again.stdout[-2000:]
    for output in (plan.stdout, plan.stderr, applied.stdout, applied.stderr):
        assert not any(value in output for value in SECRETS.values())


def test_a_wrong_password_is_one_line_and_changes_nothing(served):
    tmp_path, env, graph, port, _text = served
    desired = remote_file(tmp_path, graph, port)
    result = run({**env, "SYNCPREP_WINRM_PASSWORD": "wrong"}, tmp_path, "plan", desired)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "wrong" not in result.stderr


HARNESS = Path(__file__).parent / "faults" / "harness.py"
REAL_PROVIDERS = "providers.entraconnect.server:PsrpServer,providers.graph.tenant:GraphTenant"


@pytest.mark.parametrize("point", ["boundary:1", "boundary:6", "inside:3", "inside:11", "inside:13"])
def test_a_killed_apply_through_the_real_providers_resumes_to_the_desired_state(served, point):
    """The apply dies; the served server and tenant do not, as in a real window."""
    from conftest import FIGURES

    tmp_path, env, graph, port, _text = served
    desired = remote_file(tmp_path, graph, port)
    env = {**env, "SYNCPREP_FAULT_CLASSES": REAL_PROVIDERS, "SYNCPREP_FAULT_LAB": str(tmp_path / "lab.json")}
    ops = tmp_path / "ops.jsonl"

    def harness(kill, *args):
        return faults_harness.run_forked(ops, kill, args, cwd=tmp_path, env=env, timeout=300)

    killed = harness(point, "apply", desired, "--auto-approve")
    assert killed.returncode == -9, killed.stdout[-2000:] + killed.stderr[-2000:]
    FIGURES["faults injected"] += 1
    plan = run(env, tmp_path, "plan", desired)
    assert "was interrupted" in plan.stderr
    resumed = harness("none", "apply", desired, "--resume", "--auto-approve")
    FIGURES["runs resumed"] += 1
    assert resumed.returncode in (0, 4), resumed.stdout[-3000:] + resumed.stderr[-2000:]
    assert run(env, tmp_path, "plan", desired, "--detailed-exitcode").returncode == 0
    assert max(faults_harness.licence_changes(ops).values()) == 1, "no licence change made twice"
    FIGURES["runs converged"] += 1


def test_a_saved_plan_binds_the_scripts_it_will_run(served):
    """An edited script in a saved plan (checksum recomputed) is refused; the unedited plan applies."""
    from reconciler import savedplan

    tmp_path, env, graph, port, _text = served
    desired = remote_file(tmp_path, graph, port)
    made = run(env, tmp_path, "plan", desired, "-out", "plan.json")
    assert made.returncode == 0, made.stderr
    data = json.loads((tmp_path / "plan.json").read_text())
    scripted = [s for s in data["steps"] if s.get("script")]
    assert scripted and all("ADSync" in s["script"] for s in scripted)
    scripted[0]["script"] += "\nGet-ADSyncRule | Remove-ADSyncRule"
    data["checksum"] = savedplan._checksum(data)
    (tmp_path / "edited.json").write_text(json.dumps(data))
    refused = run(env, tmp_path, "apply", "edited.json", "--desired", desired, "--auto-approve")
    assert refused.returncode == 1 and "planning again gives other steps or scripts; nothing was changed" in refused.stderr
    assert "Apply complete" not in refused.stdout
    applied = run(env, tmp_path, "apply", "plan.json", "--desired", desired, "--auto-approve")
    assert applied.returncode == 4, applied.stdout[-3000:] + applied.stderr[-2000:]
    assert run(env, tmp_path, "plan", desired, "--detailed-exitcode").returncode == 0


def test_every_command_at_debug_over_http2_leaks_no_secret_to_any_output_or_file(served_h2):
    """Every command that reaches the served lab, at DEBUG, Graph over HTTP/2: no credential in
    stdout, stderr or any file, in clear, in base64 (Basic auth) or as the Authorization header
    (hpack's header blocks, from which the token decodes, are never logged)."""
    import base64

    tmp_path, env, graph, port, _text = served_h2
    assert graph.startswith("https://")
    env = {**env, "SYNCPREP_LOG_LEVEL": "DEBUG"}
    desired = remote_file(tmp_path, graph, port)
    outputs = []
    for args in (
        ("validate", desired),
        ("plan", desired, "--show-scripts"),
        ("plan", desired, "--json"),
        ("plan", desired, "-out", "plan.json"),
        ("show", "plan.json"),
        ("show", "plan.json", "--markdown"),
        ("drift", desired, "--json"),
        ("apply", "plan.json", "--desired", desired, "--auto-approve"),
        ("drift", desired, "--markdown"),
        ("export", "--from", desired, "-o", "current.toml"),
    ):
        result = run(env, tmp_path, *args, fresh=True)  # what a module logs as it is imported counts too
        assert result.returncode in (0, 2, 4), (args, result.stderr[-2000:])
        outputs += [result.stdout, result.stderr]
    assert sum("DEBUG " in text for text in outputs) >= 5, "the commands ran at DEBUG"
    assert any('"HTTP/2 200 OK"' in text for text in outputs), "Graph answered over HTTP/2"
    assert not any("hpack" in text for text in outputs)
    user, password, token = SECRETS["SYNCPREP_WINRM_USERNAME"], SECRETS["SYNCPREP_WINRM_PASSWORD"], SECRETS["SYNCPREP_GRAPH_TOKEN"]
    secrets = [password, token, base64.b64encode(f"{user}:{password}".encode()).decode(), base64.b64encode(token.encode()).decode()]
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    for secret in secrets:
        assert not any(secret in text for text in outputs), secret
        assert not any(secret.encode() in p.read_bytes() for p in files), secret
