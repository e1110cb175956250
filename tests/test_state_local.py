"""``[state]`` and ``--state``; the local backend's lock record, abandoned locks and force-unlock."""

import json
import os

import pytest

from conftest import EXAMPLE
from reconciler.errors import ConfigError
from reconciler.journal import TargetLock, read_lock, target_slug
from reconciler.loader import loads_desired


def _problems(text):
    with pytest.raises(ConfigError) as caught:
        loads_desired(text, "d.toml")
    return caught.value.problems


def test_state_keys_are_checked_with_the_file_and_line():
    assert list(_problems('[state]\nbackend = "server"\n')) == [
        'd.toml:2: state.backend: an in-process lab has no server to keep the lock on: use "local" (or a remote target, e.g. \'syncprep lab serve\')'
    ]
    problems = _problems('[state]\nbackend = "azureblob"\ncontainer = "No_Such"\nlease_seconds = 90\n')
    assert any('backend "azureblob" needs account_url' in p for p in problems)
    assert any(p.startswith("d.toml:3: state.container:") for p in problems)
    assert any(p.startswith("d.toml:4: state.lease_seconds:") for p in problems)
    assert _problems('[state]\nbackend = "nfs"\n')[0].startswith("d.toml:2: state.backend:")
    assert list(_problems('[state]\naccount_url = "https://x.blob.core.windows.net"\n')) == ["d.toml:2: state.account_url: only the azureblob backend takes it"]


def test_the_lock_records_its_holder_and_the_plan(tmp_path):
    path = tmp_path / "t.lock"
    with TargetLock(path, "apply x.toml") as lock:
        lock.record_plan("feedbeef")
        held = read_lock(path)
        assert {k: held[k] for k in ("id", "pid", "command", "plan")} == {"id": lock.id, "pid": os.getpid(), "command": "apply x.toml", "plan": "feedbeef"}
        assert held["user"] and held["host"] and held["since"]
    assert read_lock(path) is None


def test_an_abandoned_local_lock_is_reported_and_force_unlock_asks_first(tmp_path, cli):
    from providers.lab import scenario, store
    from providers.lab.provider import LabTarget

    lab_path = tmp_path / "lab.json"
    store.save(scenario.build(), lab_path)
    lock_path = tmp_path / f"{target_slug(LabTarget(store.load(lab_path), lab_path).key)}.lock"
    dead = {"id": "deadbeef", "pid": 2**22 + 12345, "host": os.uname().nodename, "user": "ops", "since": "2026-11-28T01:00:00Z", "plan": "0a1b2c"}
    lock_path.write_text(json.dumps(dead))
    code, _out, err = cli("apply", EXAMPLE, "--auto-approve", "--lab", lab_path)
    assert code == 1 and "the lock is abandoned" in err and "never taken silently" in err and "plan 0a1b2c" in err
    code, _out, err = cli("force-unlock", "deadbeef", "--lab", lab_path)
    assert code == 1 and "needs confirmation" in err and "force-unlock breaks the lock" in err and "ops@" in err
    assert read_lock(lock_path)["id"] == "deadbeef"
    code, out, _err = cli("force-unlock", "deadbeef", "--yes", "--lab", lab_path)
    assert code == 0 and "Released lock id deadbeef" in out and read_lock(lock_path) is None


def test_state_on_the_command_line_overrides_the_file(tmp_path, cli):
    (tmp_path / "d.toml").write_text(EXAMPLE.read_text())
    code, _out, err = cli("plan", "d.toml", "--state", "server", "--lab", tmp_path / "lab.json")
    assert code == 1 and 'state.backend: "server" keeps the lock on the Entra Connect server' in err
    code, _out, err = cli("force-unlock", "x", "--state", "server", "--lab", tmp_path / "lab.json")
    assert code == 1 and "--state server: name the desired-state file" in err


def test_the_storage_account_gets_credentials_only_when_the_operator_allows_it(tmp_path, cli, monkeypatch):
    monkeypatch.delenv("SYNCPREP_ALLOW_ENDPOINTS", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("SYNCPREP_STORAGE_TOKEN", "not-to-be-sent")
    state = '[state]\nbackend = "azureblob"\naccount_url = "https://storage.attacker.example"\ncontainer = "loot"\nauth = "token-env"\n'
    (tmp_path / "d.toml").write_text(EXAMPLE.read_text() + "\n" + state)
    code, _out, err = cli("plan", "d.toml", "--lab", tmp_path / "lab.json")
    assert code == 1 and "storage.attacker.example" in err and err.count("\n") == 1
    assert "not-to-be-sent" not in err


def test_local_a_killed_apply_is_reported_abandoned_and_resumed_from_another_working_directory(tmp_path):
    """local keeps the lock and journal next to the lab file, so another working directory sees them."""
    from faults import harness as faults_harness
    from providers.lab import scenario, store
    from test_faults import assert_converged

    store.save(scenario.build(users=20), tmp_path / "lab.json")
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    env = {**os.environ, "SYNCPREP_FAULT_LAB": str(tmp_path / "lab.json"), "NO_COLOR": "1"}

    def run(cwd, kill, *args):
        return faults_harness.run_forked(tmp_path / "ops.jsonl", kill, [*args, "--lab", tmp_path / "lab.json"], cwd=cwd, env=env, timeout=120)

    killed = run(a, "boundary:3", "apply", EXAMPLE, "--auto-approve")
    assert killed.returncode == -9
    assert "was interrupted" in run(b, "none", "plan", EXAMPLE).stderr
    refused = run(b, "none", "apply", EXAMPLE, "--auto-approve")
    assert refused.returncode == 1 and "the lock is abandoned" in refused.stderr
    resumed = run(b, "none", "apply", EXAMPLE, "--resume", "--auto-approve")
    assert resumed.returncode == 4 and "took over the lock" in resumed.stderr, resumed.stderr
    assert_converged(tmp_path, EXAMPLE)
