"""The ``azureblob`` state backend against Azurite (started by the fixture on loopback, stopped after):
two applies from two processes and two working directories, a killed apply resumed
from another, an abandoned lease reported and cleared only by force-unlock."""

import os
import re
import time

import pytest

import azurite
from conftest import EXAMPLE
from faults import harness as faults_harness
from providers.lab import scenario, store
from providers.lab.provider import LabTarget
from reconciler.apply import observe
from reconciler.loader import load_desired
from reconciler.plan import build_plan



@pytest.fixture(scope="module")
def storage():
    yield from azurite.start()


def _setup(tmp_path, storage, container):
    """A lab, and the same desired-state file (lab target, azureblob state) in two working directories."""
    lab = scenario.build(users=20)
    lab.server.sync_interval = 100_000
    store.save(lab, tmp_path / "lab.json")
    text = EXAMPLE.read_text() + "\n" + storage.state_toml(container=container)
    dirs = []
    for name in ("checkout-a", "checkout-b"):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "d.toml").write_text(text)
        dirs.append(folder)
    env = {**os.environ, **storage.env, "NO_COLOR": "1", "SYNCPREP_FAULT_LAB": str(tmp_path / "lab.json")}
    return dirs, env


def _run(env, cwd, ops, kill, *args):
    return faults_harness.run_forked(ops, kill, args, cwd=cwd, env=env, timeout=300)


def _licences_changed_once(ops):
    counted = faults_harness.licence_changes(ops)
    return bool(counted) and max(counted.values()) == 1


def _converged(tmp_path):
    lab = store.load(tmp_path / "lab.json")
    desired = load_desired(EXAMPLE)
    target = LabTarget(lab)
    return build_plan(desired, observe(target, desired), "lab").steps == () and lab.server.sync_cycle_enabled


def test_two_applies_from_two_processes_exactly_one_runs(tmp_path, storage):
    (a, b), env = _setup(tmp_path, storage, "two-applies")
    lab = tmp_path / "lab.json"
    ops = tmp_path / "ops.jsonl"
    # Two processes at once, forked from this one as _run forks one (two new interpreters cost 1-2 s of CPU).
    apply = {"oplog_path": ops, "kill": "none", "args": ["apply", "d.toml", "--auto-approve", "--lab", lab], "env": env}
    results = [(done.returncode, done.stdout, done.stderr) for done in faults_harness.run_forked_together([{**apply, "cwd": a}, {**apply, "cwd": b}], timeout=300)]
    assert sorted(code for code, _o, _e in results) in ([0, 4], [1, 4]), results
    for code, _out, err in results:
        if code == 1:
            assert "another apply holds the lock" in err and "(azureblob)" in err, err
    assert sum("Apply complete" in out for _c, out, _e in results) == 1, "exactly one apply ran"
    assert _licences_changed_once(ops)
    assert _converged(tmp_path)


def test_a_killed_apply_is_resumed_from_another_working_directory_after_force_unlock(tmp_path, storage):
    from providers.azureblob import BlobState
    from reconciler.desired import StateSpec

    (a, b), env = _setup(tmp_path, storage, "killed")
    lab = tmp_path / "lab.json"
    ops = tmp_path / "ops.jsonl"
    killed = _run(env, a, ops, "boundary:3", "apply", "d.toml", "--auto-approve", "--lab", lab)
    assert killed.returncode == -9, killed.stdout[-2000:] + killed.stderr[-2000:]
    plan = _run(env, b, ops, "none", "plan", "d.toml", "--lab", lab)
    assert "was interrupted" in plan.stderr, plan.stderr
    # While the lease has not run out it is held; once it has, it is abandoned: refused either way.
    held = _run(env, b, ops, "none", "apply", "d.toml", "--auto-approve", "--lab", lab)
    assert held.returncode == 1 and ("another apply holds the lock" in held.stderr or "abandoned" in held.stderr), held.stderr
    lock_id = re.search(r"id ([0-9a-f]{8}),", held.stderr).group(1)
    spec = StateSpec(account_url=storage.account_url, container="killed", auth="token-env", lease_seconds=15)
    state = BlobState.open(spec, "unused", ca_bundle=storage.ca_bundle, environ=storage.env)
    blob = state.container.get_blob_client(next(state.container.list_blobs()).name)
    for _ in range(600):  # the killed apply's lease runs out (15 s): nobody renews it
        if blob.get_blob_properties().lease.state != "leased":
            break
        time.sleep(0.1)
    state.close()
    for args in (("apply", "d.toml", "--auto-approve"), ("apply", "d.toml", "--resume", "--auto-approve")):
        abandoned = _run(env, b, ops, "none", *args, "--lab", lab)
        assert abandoned.returncode == 1, abandoned.stderr
        assert f"the lock is abandoned (its lease expired: the holder stopped renewing it): id {lock_id}" in abandoned.stderr
    asked = _run(env, b, ops, "none", "force-unlock", lock_id, "d.toml", "--lab", lab)
    assert asked.returncode == 1 and "its lease is broken" in asked.stderr and "needs confirmation" in asked.stderr
    released = _run(env, b, ops, "none", "force-unlock", lock_id, "d.toml", "--yes", "--lab", lab)
    assert released.returncode == 0, released.stderr
    resumed = _run(env, b, ops, "none", "apply", "d.toml", "--resume", "--auto-approve", "--lab", lab)
    assert resumed.returncode == 4, resumed.stdout[-3000:] + resumed.stderr[-2000:]
    assert "was interrupted" in resumed.stderr
    assert _licences_changed_once(ops)
    assert _converged(tmp_path)


def test_a_broken_lease_stops_its_holder_from_writing_the_journal(storage):
    from providers.azureblob import BlobState
    from reconciler.desired import StateSpec
    from reconciler.errors import ReconcilerError
    from reconciler.journal import Journal, last_interrupted
    from reconciler.state import LockedError

    spec = StateSpec(account_url=storage.account_url, container="fenced", auth="token-env", lease_seconds=15)
    first = BlobState.open(spec, "t1", ca_bundle=storage.ca_bundle, environ=storage.env)
    second = BlobState.open(spec, "t1", ca_bundle=storage.ca_bundle, environ=storage.env)
    try:
        with first.lock("apply a") as held:
            held.record_plan("c0ffee")
            with pytest.raises(LockedError, match=f"another apply holds the lock: id {held.id},.*plan c0ffee"):
                second.lock("apply b").__enter__()
            Journal(first).start("sum", "apply", ["x"])
            assert last_interrupted(second).run is not None
            assert second.force_unlock(held.id)["id"] == held.id
            with pytest.raises(ReconcilerError, match="no longer this apply's"):
                Journal(first).step_started("x")
        assert second.read_lock() is None
        with second.lock("apply b"):
            pass
    finally:
        first.close()
        second.close()


class _Unreachable:
    """A container (and its blobs) whose every request fails before an answer: what azure-core
    raises for a refused connection, a DNS or a TLS failure (ServiceRequestError, not an HttpResponseError)."""

    container_name = "syncprep"

    def __getattr__(self, name):
        from azure.core.exceptions import ServiceRequestError

        def request(*args, **kwargs):
            raise ServiceRequestError("<urllib3.connection.HTTPSConnection object>: Failed to establish a new connection: [Errno 111] Connection refused")

        return request

    def get_blob_client(self, name):
        return _Unreachable()

    def close(self):
        pass


@pytest.mark.parametrize(
    "call, what",
    [
        (lambda state: state.lock("apply a").__enter__(), "prepare the container"),
        (lambda state: state.read_lock(), "read the lock"),
        (lambda state: state.read_journal(), "read the journal"),
        (lambda state: state.force_unlock("abc"), "read the lock"),
        (lambda state: state.lock("apply a").record_plan("c0ffee"), "record the plan in the lock"),
    ],
    ids=["lock", "read-lock", "read-journal", "force-unlock", "record-plan"],
)
def test_an_unreachable_storage_account_is_one_line_not_a_traceback(call, what):
    from providers.azureblob import BlobState
    from reconciler.errors import ReconcilerError

    state = BlobState(_Unreachable(), "t1", where="container syncprep of https://127.0.0.1:1/devstoreaccount1 (azureblob)")
    with pytest.raises(ReconcilerError) as caught:
        call(state)
    message = str(caught.value)
    assert "\n" not in message and what in message and "ServiceRequestError" in message and "Connection refused" in message, message


class _Counting:
    """A TCP server on loopback that counts the connections made to it and answers each with
    ``reply`` (bytes), or closes it at once (None: for an HTTPS client, no server there)."""

    def __init__(self, reply=None, silent=False):
        import socket
        import threading

        self.reply = reply
        self.silent = silent  # accept, read nothing, answer never (an answer lost on the way)
        self._held = []
        self.count = 0
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self):
        while True:
            try:
                conn, _addr = self._sock.accept()
            except OSError:
                return
            self.count += 1
            if self.silent:
                self._held.append(conn)
                continue
            with conn:
                if self.reply is not None:
                    conn.recv(65536)
                    conn.sendall(self.reply)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        for conn in self._held:
            conn.close()
        self._sock.close()
        return False


@pytest.fixture
def no_backoff(monkeypatch):
    """The retries' pauses skipped (their lengths are checked on the policy, never timed).
    On HttpTransport, whose sleep every sync transport inherits: a blob client made from a
    service or container client sends through the storage SDK's TransportWrapper, not the
    RequestsTransport itself, and slept its 1-2, 3-4 and 5-6 s for real (17 s a run)."""
    from azure.core.pipeline.transport import HttpTransport

    monkeypatch.setattr(HttpTransport, "sleep", lambda self, seconds: None)


def _closed_port():
    import socket

    with socket.create_server(("127.0.0.1", 0)) as sock:
        return sock.getsockname()[1]


def _attempts(monkeypatch):
    from azure.core.pipeline.transport import RequestsTransport

    sent = []
    send = RequestsTransport.send
    monkeypatch.setattr(RequestsTransport, "send", lambda self, request, **kw: sent.append(request.url) or send(self, request, **kw))
    return sent


@pytest.mark.parametrize("server", ["closed-port", "no-tls-server"])
def test_an_unreachable_storage_account_is_tried_twice_not_four_times(server, monkeypatch):
    """The SDK's default (3 retries after 15, 18 and 24 s) took 80 s to say "cannot reach".
    With the real pause (1-2 s) between the tries, not no_backoff: the count depends on it. A
    reset TLS handshake is ServiceRequestError or ServiceResponseError (a race); when the two
    tries get one each, the policy (one connect retry, one read retry) tries a third time:
    2 runs in 30 without the pause, 1 in 70 with it (and 1 in 70 on the code before)."""
    from providers.azureblob import BlobState
    from reconciler.desired import StateSpec
    from reconciler.errors import ReconcilerError

    sent = _attempts(monkeypatch)
    with _Counting() as listening:
        port = _closed_port() if server == "closed-port" else listening.port
        spec = StateSpec(account_url=f"https://127.0.0.1:{port}/devstoreaccount1", container="c", auth="token-env")
        state = BlobState.open(spec, "t1", environ={spec.token_env: "a-token"})
        # A server that closes at once resets the TLS handshake: requests reports that as an
        # aborted connection, which azure-core calls ServiceResponseError or ServiceRequestError
        # depending on when the reset arrives (a race); both are tried twice, no more.
        with pytest.raises(ReconcilerError, match="read the lock: Service(Request|Response)Error"):
            state.read_lock()
        state.close()
    assert len(sent) == 2, sent
    assert listening.count == (2 if server == "no-tls-server" else 0)


def test_the_retries_are_short_for_no_connection_and_kept_for_a_busy_server():
    from azure.storage.blob import ExponentialRetry

    from providers.azureblob import CONNECTION_TIMEOUT, client_options

    options = client_options()
    policy = options["retry_policy"]
    assert isinstance(policy, ExponentialRetry)
    assert (policy.connect_retries, policy.read_retries) == (1, 1)
    assert policy.status_retries == policy.total_retries == 3  # 408, 429, 500, 503: worth waiting for
    pauses = [policy.initial_backoff + (0 if n == 0 else policy.increment_base**n) + policy.random_jitter_range for n in range(3)]
    assert pauses[0] <= 2 and sum(pauses) <= 12, pauses
    assert options["connection_timeout"] == CONNECTION_TIMEOUT <= 5


def test_a_busy_server_is_retried_three_times(no_backoff):
    """A 503 (server busy) still gets its retries, with the clients' policy."""
    from azure.core.exceptions import HttpResponseError
    from azure.storage.blob import BlobServiceClient

    from providers.azureblob import client_options

    busy = b"HTTP/1.1 503 Server Busy\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    with _Counting(busy) as server:
        client = BlobServiceClient(f"http://127.0.0.1:{server.port}/devstoreaccount1", **client_options())
        with pytest.raises(HttpResponseError):
            client.get_container_client("c").get_blob_client("b").get_blob_properties()
    assert server.count == 4


def test_a_lease_renewal_that_missed_is_tried_again_soon_not_a_period_later():
    from azure.core.exceptions import ServiceRequestError

    from providers.azureblob import RENEW_AGAIN_AFTER, _Renewer

    class Lease:
        calls = 0

        def renew(self, **options):
            Lease.calls += 1
            if Lease.calls == 1:
                raise ServiceRequestError("Connection reset by peer")

    class Stopped:
        """The renewer's pauses, recorded; stopped after four of them."""

        waits = []

        def wait(self, seconds):
            self.waits.append(seconds)
            return len(self.waits) > 3

        def set(self):
            pass

    renewer = _Renewer(Lease(), 20.0)
    renewer.stopped = Stopped()
    renewer.run()
    assert Lease.calls == 3
    assert Stopped.waits == [20.0, RENEW_AGAIN_AFTER, 20.0, 20.0]
    assert renewer.lost is None


@pytest.mark.parametrize("lease_seconds", [15, 60])
def test_a_lease_renewal_whose_answer_never_comes_gives_up_in_time_for_three_tries(lease_seconds):
    """Final read B, B2: a renewal waited the SDK's read timeout (60 s) twice, 122 s, longer than
    the lease. Each renewal's own timeouts (not timed here: their sum is checked) leave room for
    three renewals that got no answer, with the renewer's pauses, before the lease runs out."""
    from providers.azureblob import RENEW_AGAIN_AFTER, _Renewer

    every = max(1.0, lease_seconds / 3)
    options = _Renewer(object(), every).options
    assert options["retry_total"] == 0, "the renewer retries, not the client"
    one = options["connection_timeout"] + options["read_timeout"]
    assert every + 3 * one + 2 * RENEW_AGAIN_AFTER <= lease_seconds


def test_a_lease_renewal_to_a_server_that_never_answers_makes_one_bounded_request():
    """Against a real silent server: one connection (no client retry), and the read timeout the
    renewer chose is the one the transport used (requests names it in its error)."""
    from azure.core.exceptions import ServiceResponseError
    from azure.storage.blob import BlobLeaseClient, BlobServiceClient

    from providers.azureblob import _Renewer, client_options

    with _Counting(silent=True) as server:
        client = BlobServiceClient(f"http://127.0.0.1:{server.port}/devstoreaccount1", **client_options())
        lease = BlobLeaseClient(client.get_blob_client("c", "t1.journal"), lease_id="00000000-0000-0000-0000-000000000001")
        renewer = _Renewer(lease, 5.0)
        with pytest.raises(ServiceResponseError, match=re.escape(f"read timeout={renewer.options['read_timeout']}")):
            renewer.renew_once()
        assert server.count == 1
