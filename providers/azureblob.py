"""The ``azureblob`` state backend: the lock and the journal in Azure Blob Storage.

As Terraform's azurerm backend: a container of a storage account, credentials from
azure-identity (never from the desired-state file), the lock as a blob lease.

One append blob per target, ``<slug>.journal``:

* the journal is the blob's content, one JSON line per ``Append Block``, which the
  service has committed (durably, replicated) when the call returns;
* the lock is a lease on that same blob, so while an apply holds it the service
  refuses every other writer's append: an apply whose lease was broken cannot write
  on. The lease lasts ``lease_seconds`` (15 to 60) and is renewed at a third of that
  by a thread while the apply runs;
* the holder's record (id, user, host, pid, since, command, plan) is the blob's
  metadata, with ``syncprep_state`` = ``held``; a clean end sets ``released``.

Abandoned: the lease is free (it expired: its holder stopped renewing it) but the
metadata still says ``held``. That is reported with the holder, and only
``syncprep force-unlock ID`` clears it; ``--resume`` never takes it.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import threading
import time
from urllib.parse import urlsplit

from reconciler.errors import ConfigError, ReconcilerError
from reconciler.state import LockedError, StateBackend, held_error, holder_record

STATE_KEY = "syncprep_state"
HOLDER_KEY = "syncprep_holder"
#: The public clouds' blob endpoints (over https) are allowed by default, as Graph's are.
DEFAULT_SUFFIXES = (".blob.core.windows.net", ".blob.core.usgovcloudapi.net", ".blob.core.chinacloudapi.cn")


def check_endpoint(spec, allowance, source):
    """Credentials go only to an endpoint the operator allowed (see providers.endpoints)."""
    from providers.endpoints import Allowance, Endpoint

    parts = urlsplit(spec.account_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError([f"{source}: state.account_url: {spec.account_url!r} is not an http(s) URL"])
    endpoint = Endpoint("Azure Blob Storage", parts.scheme, parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
    default = parts.scheme == "https" and endpoint.port == 443 and parts.hostname.lower().endswith(DEFAULT_SUFFIXES)
    (allowance if allowance is not None else Allowance()).require(endpoint, source, default=default)


def credential(spec, environ=None):
    """The azure-identity credential ``[state] auth`` names (imported only here)."""
    environ = os.environ if environ is None else environ
    if spec.auth == "token-env":
        token = environ.get(spec.token_env)
        if not token:
            raise ReconcilerError(f"state: auth = \"token-env\": set {spec.token_env} to a bearer token for Azure Storage")
        return _StaticToken(token)
    from azure import identity

    if spec.auth == "environment":
        return identity.EnvironmentCredential()
    if spec.auth == "managed-identity":
        return identity.ManagedIdentityCredential(client_id=spec.client_id) if spec.client_id else identity.ManagedIdentityCredential()
    if spec.auth == "workload-identity":
        return _workload_identity(identity, spec, environ)
    if spec.auth == "azure-cli":
        return identity.AzureCliCredential()
    return identity.DefaultAzureCredential(exclude_interactive_browser_credential=True)


def _workload_identity(identity, spec, environ):
    """Workload identity federation as the Graph provider does it (providers.graph.federation):
    a federated token file, else GitHub Actions' own OIDC token; no secret."""
    from types import SimpleNamespace

    from providers.graph.federation import federated_credential
    from reconciler.errors import ProviderError

    ids = SimpleNamespace(tenant_id=None, client_id=spec.client_id)
    try:
        return federated_credential(ids, {}, environ=environ)
    except ProviderError as exc:
        raise ReconcilerError(f"state: {exc.message}") from None


class _StaticToken:
    """A bearer token the pipeline holds (``token-env``), as a TokenCredential."""

    def __init__(self, token):
        self._token = token

    def get_token(self, *scopes, **kwargs):
        from azure.core.credentials import AccessToken

        return AccessToken(self._token, int(time.time()) + 3600)

    def __repr__(self):
        return "_StaticToken(***)"


def _encode(record):
    return base64.b64encode(json.dumps(record, sort_keys=True).encode()).decode()


def _decode(text):
    try:
        record = json.loads(base64.b64decode(text or "").decode())
    except (ValueError, UnicodeDecodeError):
        return None
    return record if isinstance(record, dict) else None


def _code(exc):
    """Azure's error code as the REST API spells it ("LeaseLost"): azure-storage-blob gives a
    StorageErrorCode, a str enum that formats as "StorageErrorCode.LEASE_LOST" in a message."""
    code = getattr(exc, "error_code", None) or ""
    return str(getattr(code, "value", code))


#: Seconds before a lease renewal that failed is tried again.
RENEW_AGAIN_AFTER = 1.0


def renew_options(every):
    """Per-call options of one lease renewal, made every ``every`` seconds (a third of the lease).

    The clients' defaults suit the journal, not the lease: a renewal whose answer is lost (a kept-alive
    connection that a NAT or firewall dropped in silence) would wait the SDK's read timeout (60 s)
    and then once more, 122 s in all, and the lease (15 to 60 s) would lapse meanwhile. So each
    renewal waits at most a quarter of the period to connect and as long for the answer, is not
    retried by the client, and the renewer tries it again after RENEW_AGAIN_AFTER: with a 15 s lease,
    renewals start 5 s after the last one and three can be tried before it runs out (five with 60 s)."""
    wait = min(CONNECTION_TIMEOUT, max(1.0, every / 4))
    return {"connection_timeout": wait, "read_timeout": wait, "retry_total": 0}


def _first_line(exc):
    message = getattr(exc, "message", None) or str(exc)
    return " ".join(str(message).split("\n")[0].split())


class _Renewer(threading.Thread):
    def __init__(self, lease, every):
        super().__init__(name="syncprep-lease-renewer", daemon=True)
        self.lease = lease
        self.every = every
        self.options = renew_options(every)
        self.stopped = threading.Event()
        #: Why the last renewal failed (None: it worked): said by the append that finds the lease gone.
        self.lost = None

    def renew_once(self):
        self.lease.renew(**self.options)

    def run(self):
        wait = self.every
        while not self.stopped.wait(wait):
            try:
                self.renew_once()
            except Exception as exc:  # noqa: BLE001 - remembered; the next append fails on its own, saying it
                self.lost = f"{type(exc).__name__}: {_code(exc) or _first_line(exc)}"
                if _code(exc) in ("LeaseIdMismatchWithLeaseOperation", "LeaseLost", "LeaseNotPresentWithLeaseOperation", "LeaseIsBrokenAndCannotBeRenewed"):
                    return
                # A renewal that missed (a blip, after the client's own retry) is tried again
                # soon, not a third of the lease later, so that the lease does not run out.
                wait = min(self.every, RENEW_AGAIN_AFTER)
            else:
                self.lost = None
                wait = self.every


class _BlobLock:
    def __init__(self, state, command):
        self.state = state
        self.info = holder_record(command)
        self.id = self.info["id"]
        self.taken_over = None
        self._renewer = None

    def __enter__(self):
        from azure.core.exceptions import AzureError

        state = self.state
        blob = state.prepare()
        try:
            lease = blob.acquire_lease(lease_duration=state.lease_seconds)
        except AzureError as exc:
            if _code(exc) != "LeaseAlreadyPresent":
                raise state.failure("take the lease", exc) from None
            held = state.read_lock() or {"id": "?", "user": "?", "host": "?", "pid": "?", "since": "?"}
            raise held_error(held, state.where()) from None
        try:
            held = state.read_lock()
            if held is not None:
                lease.release()
                raise held_error(held, state.where(), "its lease expired: the holder stopped renewing it")
            blob.set_blob_metadata({STATE_KEY: "held", HOLDER_KEY: _encode(self.info)}, lease=lease)
        except AzureError as exc:
            _release_quietly(lease)
            raise state.failure("record the holder", exc) from None
        state.lease = lease
        self._renewer = state.renewer = _Renewer(lease, max(1.0, state.lease_seconds / 3))
        self._renewer.start()
        return self

    def record_plan(self, plan_hash):
        from azure.core.exceptions import AzureError

        self.info = {**self.info, "plan": plan_hash}
        try:
            self.state.blob.set_blob_metadata({STATE_KEY: "held", HOLDER_KEY: _encode(self.info)}, lease=self.state.lease)
        except AzureError as exc:
            raise self.state.failure("record the plan in the lock", exc) from None

    def __exit__(self, *exc):
        state = self.state
        if self._renewer is not None:
            self._renewer.stopped.set()
            self._renewer.join()
        lease, state.lease, state.renewer = state.lease, None, None
        if lease is not None:
            try:
                state.blob.set_blob_metadata({STATE_KEY: "released"}, lease=lease)
                lease.release()
            except Exception:  # noqa: BLE001 - a lease broken by force-unlock is not ours to release
                pass
        return False


def _release_quietly(lease):
    try:
        lease.release()
    except Exception:  # noqa: BLE001 - it expires on its own
        pass


#: Seconds to open a connection (the SDK's default is 20, per attempt): Azure answers a TCP
#: connect in well under a second; a silent network (a firewall dropping packets) answers never.
CONNECTION_TIMEOUT = 5


def client_options():
    """The clients' retries and timeouts, through the SDK's documented options.

    The SDK's default (ExponentialRetry: 3 retries after 15, 18 and 24 s, each connect
    waiting up to 20 s) kept an engineer waiting 80 s and more to learn that a mistyped
    account or a dead network cannot be reached. Here a connection that cannot be made
    (refused, DNS, TLS: ServiceRequestError) or whose answer was lost (ServiceResponseError)
    is tried once more after about a second, once in all (see _one_transport_retry); a server
    that answers busy or failing (408, 429, 500, 503...) is worth waiting for, so it gets three
    retries after about 1, 3 and 5 s. A lease renewal does not use these: it has its own short
    timeouts and no client retry, and the renewer tries it again soon (see renew_options), so
    that a renewal whose answer is lost does not outlast the lease."""
    retry = _one_transport_retry()(initial_backoff=1, increment_base=2, retry_total=3, random_jitter_range=1, retry_connect=1, retry_read=1, retry_status=3)
    return {"retry_policy": retry, "connection_timeout": CONNECTION_TIMEOUT}


@functools.cache
def _one_transport_retry():
    """The SDK's ExponentialRetry with one budget for the failures without an answer.

    The SDK (azure-storage-blob's StorageRetryPolicy.increment) spends retry_connect on a
    ServiceRequestError and retry_read on a ServiceResponseError, and a server resetting the
    TLS handshake gives one or the other depending on when the reset arrives: one of each made
    a third attempt. Here each such failure spends both, so unreachable storage is reported
    after 2 attempts, whatever the mix; status retries (retry_status) are untouched. Made on
    first use: the SDK is imported only by a command that uses the backend."""
    from azure.core.exceptions import ServiceRequestError, ServiceResponseError
    from azure.storage.blob import ExponentialRetry

    class OneTransportRetry(ExponentialRetry):
        def increment(self, settings, request, response=None, error=None):
            if isinstance(error, ServiceRequestError):
                settings["read"] -= 1  # and the SDK spends "connect"
            elif isinstance(error, ServiceResponseError):
                settings["connect"] -= 1  # and the SDK spends "read"
            return super().increment(settings, request, response=response, error=error)

    return OneTransportRetry


class BlobState(StateBackend):
    name = "azureblob"

    def __init__(self, container_client, slug, lease_seconds=60, where=""):
        self.container = container_client
        self.blob = container_client.get_blob_client(f"{slug}.journal")
        self.lease_seconds = lease_seconds
        self.lease = None
        #: The lock's lease renewer while this backend holds the lock (its failures explain a lost lease).
        self.renewer = None
        self._where = where
        self._ready = False

    @classmethod
    def open(cls, spec, slug, ca_bundle=None, environ=None):
        from azure.storage.blob import BlobServiceClient

        options = {"connection_verify": ca_bundle} if ca_bundle else {}
        service = BlobServiceClient(spec.account_url, credential=credential(spec, environ), **options, **client_options())
        where = f"container {spec.container} of {spec.account_url} (azureblob)"
        return cls(service.get_container_client(spec.container), slug, spec.lease_seconds, where)

    def where(self):
        return self._where or f"container {self.container.container_name} (azureblob)"

    def failure(self, what, exc):
        return ReconcilerError(f"the lock and journal in {self.where()}: {what}: {_code(exc) or type(exc).__name__}: {_first_line(exc)}")

    def prepare(self):
        """The container and the journal blob exist (made when missing)."""
        from azure.core import MatchConditions
        from azure.core.exceptions import AzureError, ResourceExistsError

        if self._ready:
            return self.blob
        try:
            try:
                self.container.create_container()
            except ResourceExistsError:
                pass
            try:
                self.blob.create_append_blob(match_condition=MatchConditions.IfMissing)
            except ResourceExistsError:
                pass
        except AzureError as exc:
            raise self.failure("prepare the container", exc) from None
        self._ready = True
        return self.blob

    def lock(self, command, take_over_dead=False):
        # take_over_dead: never here; an abandoned lease is cleared by force-unlock only.
        return _BlobLock(self, command)

    def _properties(self):
        from azure.core.exceptions import AzureError, ResourceNotFoundError

        try:
            return self.blob.get_blob_properties()
        except ResourceNotFoundError:
            return None
        except AzureError as exc:
            raise self.failure("read the lock", exc) from None

    def read_lock(self):
        props = self._properties()
        if props is None or (props.metadata or {}).get(STATE_KEY) != "held":
            return None
        return _decode(props.metadata.get(HOLDER_KEY)) or {"id": "?"}

    def force_unlock(self, lock_id):
        from azure.core.exceptions import AzureError
        from azure.storage.blob import BlobLeaseClient

        held = self.read_lock()
        if held is None:
            raise ReconcilerError("no lock is held on this target")
        if held.get("id") != lock_id:
            raise ReconcilerError(f"the lock's id is {held.get('id')}, not {lock_id}: nothing released")
        try:
            if self._properties().lease.state == "leased":
                BlobLeaseClient(self.blob).break_lease(lease_break_period=0)
            self.blob.set_blob_metadata({STATE_KEY: "broken", "syncprep_broken": _encode(held)})
        except AzureError as exc:
            raise self.failure("break the lease", exc) from None
        return held

    def append(self, record):
        from azure.core.exceptions import AzureError

        self.prepare()
        data = (json.dumps(record, sort_keys=True) + "\n").encode("utf-8")
        try:
            self.blob.append_block(data, lease=self.lease) if self.lease is not None else self.blob.append_block(data)
        except AzureError as exc:
            if _code(exc).startswith("Lease"):
                raise ReconcilerError(f"the lease on {self.where()} is no longer this apply's ({_code(exc)}: {self._why_lease_lost()}): the journal was not written; stopping") from None
            raise self.failure("append to the journal", exc) from None

    def _why_lease_lost(self):
        """Its renewals failed (the lease ran out, or a renewal found it broken), or they worked: broken by force-unlock?"""
        lost = self.renewer.lost if self.renewer is not None else None
        return f"its last renewal failed: {lost}" if lost else "force-unlocked?"

    def read_journal(self):
        from azure.core.exceptions import AzureError, ResourceNotFoundError

        try:
            return self.blob.download_blob().readall().decode("utf-8", errors="replace")
        except ResourceNotFoundError:
            return ""
        except AzureError as exc:
            raise self.failure("read the journal", exc) from None

    def close(self):
        self.container.close()
