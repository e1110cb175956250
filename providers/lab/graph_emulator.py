"""A Microsoft Graph emulator on loopback, backed by the lab's tenant.

It serves the endpoints the Graph provider uses, in Graph's real shapes
(domain-facts B), so the real provider runs through the real msgraph-sdk over
real HTTP against it:

* ``GET /v1.0/users`` with ``$select``, ``$filter=onPremisesSyncEnabled eq true``,
  ``$top`` (at most 999) and paging by an absolute ``@odata.nextLink``;
* ``GET /users/{id|upn}``, ``GET /users/{id}/mailboxSettings`` (404
  ``MailboxNotEnabledForRESTAPI`` while there is no mailbox, pending or absent),
  ``POST /users/{id}/assignLicense`` (an add sets that licence's ``disabledPlans``,
  kept by the emulator: the lab's licences have no such field);
* ``GET /subscribedSkus``;
* ``GET /directory/deletedItems/microsoft.graph.user`` (and the SDK's
  ``graph.user``), ``GET`` and ``DELETE /directory/deletedItems/{id}``;
* ``POST /$batch``: at most 20 requests, per-item statuses, ``dependsOn``
  (424 when a dependency failed), relative or absolute sub-request URLs.

Around them: a bearer token check (401), Graph error bodies, throttling from a
token bucket (429 with ``Retry-After``, for batch items inside a 200 batch),
injectable faults (503/504 and dropped connections; a write is sometimes applied
*before* the fault, so its outcome is unknown to the client), replica lag (reads
that do not see a write yet, :meth:`GraphEmulator.lag_reads`) and counters.

Every access to the lab goes through the :class:`~providers.lab.host.LabHost`
session, which the WinRM endpoint shares.
"""

from __future__ import annotations

import base64
import collections
import copy
import datetime as dt
import email.utils
import json
import re
import math
import random
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

from reconciler.errors import ProviderError
from providers.lab.world import EPOCH, lab_guid, minute_to_iso

API_PREFIX = "/v1.0"
MAX_PAGE = 999
DEFAULT_PAGE = 100
MAX_BATCH = 20
TENANT_ID = lab_guid("tenant", "contoso")

# Real service plans (name, id) so that a client decides "includes Exchange" from the plans.
EXCHANGE_PLAN = ("EXCHANGE_S_ENTERPRISE", "efb87545-963c-4e0d-99df-69c6916d9eb0")
OTHER_PLANS = {
    True: [("SHAREPOINTENTERPRISE", "5dbe027f-2339-4123-9542-606e4d348a72")],
    False: [("AAD_PREMIUM", "41781fb2-bc02-4b7c-bd55-b576c07bb09d"), ("INTUNE_A", "c1ec4a95-1f05-45b3-a911-aa3fa01094f5")],
}

USER_PROPERTIES = (
    "id",
    "userPrincipalName",
    "displayName",
    "mail",
    "accountEnabled",
    "onPremisesSyncEnabled",
    "onPremisesDistinguishedName",
    "onPremisesImmutableId",
    "usageLocation",
    "assignedLicenses",
    "licenseAssignmentStates",
    "assignedPlans",
    "deletedDateTime",
)
DEFAULT_USER_PROPERTIES = ("id", "displayName", "userPrincipalName", "mail")

# The permission each route needs, for the ``denied`` option (least privileged, application).
ROUTE_PERMISSIONS = {
    "GET /users": "User.Read.All",
    "GET /users/{id}": "User.Read.All",
    "GET /users/{id}/mailboxSettings": "MailboxSettings.Read",
    "POST /users/{id}/assignLicense": "LicenseAssignment.ReadWrite.All",
    "GET /subscribedSkus": "LicenseAssignment.Read.All",
    "GET /directory/deletedItems/graph.user": "User.Read.All",
    "GET /directory/deletedItems/{id}": "User.Read.All",
    "DELETE /directory/deletedItems/{id}": "User.DeleteRestore.All",
    "GET /groups": "GroupMember.Read.All",
    "GET /groups/{id}": "GroupMember.Read.All",
    "GET /groups/{id}/members": "GroupMember.Read.All",
    "GET /users/{id}/memberOf": "GroupMember.Read.All",
    "POST /groups/{id}/members/$ref": "GroupMember.ReadWrite.All",
    "POST /users/{id}/reprocessLicenseAssignment": "User.ReadWrite.All",
}
WRITE_ROUTES = {
    "POST /users/{id}/assignLicense",
    "DELETE /directory/deletedItems/{id}",
    "POST /groups/{id}/members/$ref",
    "POST /users/{id}/reprocessLicenseAssignment",
}


class _Reply:
    """One HTTP answer: status, headers, a JSON-able body (or None), or a dropped connection."""

    __slots__ = ("status", "headers", "body", "drop", "html")

    def __init__(self, status=200, body=None, headers=None, drop=False, html=None):
        self.status = status
        self.body = body
        self.headers = dict(headers or {})
        self.drop = drop
        #: Text sent as text/html instead of a JSON body (a proxy's page).
        self.html = html


def _error(status, code, message, headers=None):
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    inner = {"date": now, "request-id": str(uuid.uuid4()), "client-request-id": str(uuid.uuid4())}
    return _Reply(status, {"error": {"code": code, "message": message, "innerError": inner}}, headers)


NO_MAILBOX_MESSAGES = {
    "MailboxNotEnabledForRESTAPI": "The mailbox is either inactive, soft-deleted, or is hosted on-premise.",
    "ResourceNotFound": "Resource could not be discovered.",
    "ErrorItemNotFound": "The specified object was not found in the store.",
}


#: assignedPlan.service of the lab's service plans (Graph names the service, not the plan).
_PLAN_SERVICES = {"EXCHANGE_S_ENTERPRISE": "exchange", "SHAREPOINTENTERPRISE": "SharePoint", "AAD_PREMIUM": "AADPremiumService", "INTUNE_A": "SCO"}


def _assigned_plan(minute, status, name, plan_id):
    return {"assignedDateTime": minute_to_iso(minute), "capabilityStatus": status, "service": _PLAN_SERVICES.get(name, name), "servicePlanId": plan_id}


def _not_found(key):
    return _error(
        404,
        "Request_ResourceNotFound",
        f"Resource '{key}' does not exist or one of its queried reference-property objects are not present.",
    )


class TokenBucket:
    """Graph's throttling model (domain-facts B7): ``rate`` units per second, ``burst`` at most."""

    def __init__(self, rate, burst=None, clock=time.monotonic):
        self.rate = float(rate)
        self.capacity = float(burst if burst is not None else rate)
        self.tokens = self.capacity
        self._clock = clock
        self._last = clock()
        self._lock = threading.Lock()

    def take(self, cost):
        """Take ``cost`` units; returns 0 on success, else the seconds until they would be there."""
        with self._lock:
            now = self._clock()
            self.tokens = min(self.capacity, self.tokens + (now - self._last) * self.rate)
            self._last = now
            if self.tokens >= cost:
                self.tokens -= cost
                return 0.0
            return (cost - self.tokens) / self.rate


class GraphEmulator:
    """Microsoft Graph v1.0 on ``127.0.0.1``, answering from a :class:`LabHost`'s lab.

    ``token``: the bearer token clients must send (None accepts any request).
    ``rate``/``burst``: the token bucket, in resource units per second (None: no throttling).
    ``retry_after``: the Retry-After sent when throttled; None derives whole seconds from
    the bucket as Graph does; tests pass a small float.
    ``fault_rate``: the share of requests (and of batch items) that fail with 503/504 or a
    dropped connection; a failing write is applied first half of the time.
    ``denied``: permission names the app "lacks" (403 on the routes that need them).
    ``unavailable``: routes ("GET /directory/deletedItems/graph.user") that answer 503 every time.
    """

    def __init__(
        self,
        host,
        token="syncprep-lab-token",
        *,
        port=0,
        rate=None,
        burst=None,
        retry_after=None,
        fault_rate=0.0,
        seed=0,
        denied=(),
        shuffle_batch=True,
        unavailable=(),
        tls=None,
    ):
        self.host = host
        self.unavailable = frozenset(unavailable)
        #: (certificate file, key file): serve HTTPS, HTTP/2 to clients that offer it (providers.lab.tls).
        self.tls = tls
        self.token = token
        self.port = port
        self.bucket = TokenBucket(rate, burst) if rate else None
        self.retry_after = retry_after
        self.fault_rate = fault_rate
        self.denied = frozenset(denied)
        self.shuffle_batch = shuffle_batch
        self._rng = random.Random(seed)
        self._snapshots = collections.OrderedDict()
        self._forced = collections.deque()
        self._forced_items = collections.deque()
        self._lock = threading.Lock()
        self.counters = collections.Counter()
        #: Every write that reached the lab: (route, key, what, effect) with effect
        #: "applied", "noop" (nothing to change) or "refused".
        self.writes = []
        # disabledPlans per assignment, which the lab's LabLicense does not hold:
        # {(user id, sku id): (the LabLicense, [plan ids])}. Keeping the licence object
        # makes an entry lapse when the lab removes and re-adds the licence by itself.
        self._disabled = {}
        #: UPN (lower case) -> the 404 code a mailboxSettings probe answers while the user has
        #: no mailbox. Real Graph gives MailboxNotEnabledForRESTAPI for some such users and
        #: ResourceNotFound or ErrorItemNotFound for others; which one when is not documented,
        #: so the lab says MailboxNotEnabledForRESTAPI unless a test or demo sets another.
        self.no_mailbox_codes = {}
        # Replica lag (see lag_reads): {object id: [reads left, the object before the write]}.
        self._lag_next = 0
        self._stale = {}
        # The Retry-After window being waited out, as (from, until) in time.monotonic():
        # a request arriving inside it did not honour the 429 (counted as "early").
        self._quiet = (0.0, 0.0)
        self._server = None
        self._thread = None
        self.base_url = None

    # ------------------------------------------------------------------ lifecycle

    def start(self):
        """Start serving; returns the base URL, e.g. ``http://127.0.0.1:PORT/v1.0``."""
        if self._server is not None:
            return self.base_url
        if self.tls:
            from providers.lab.tls import server_context

            server = _TLSServer(("127.0.0.1", self.port), _Handler)
            server.context = server_context(*self.tls)
        else:
            server = _Server(("127.0.0.1", self.port), _Handler)
        server.emulator = self
        self._server = server
        scheme = "https" if self.tls else "http"
        self.base_url = f"{scheme}://127.0.0.1:{server.server_address[1]}{API_PREFIX}"
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="graph-emulator", daemon=True)
        self._thread.start()
        return self.base_url

    def stop(self):
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def reset_counters(self):
        with self._lock:
            self.counters.clear()
            self.writes.clear()

    def set_faults(self, fault_rate=None, rate=None, burst=None, retry_after=None):
        """Change the fault share or the throttling while serving."""
        if fault_rate is not None:
            self.fault_rate = fault_rate
        if rate is not None:
            self.bucket = TokenBucket(rate, burst) if rate else None
        if retry_after is not None:
            self.retry_after = retry_after

    def lag_reads(self, reads):
        """Replica lag: after the next write that succeeds (assignLicense or a purge), the
        next ``reads`` GETs of that user still show it as it was before the write."""
        with self._lock:
            self._lag_next = reads

    def _lag(self, object_id, before):
        with self._lock:
            if self._lag_next:
                self._stale[object_id] = [self._lag_next, before]
                self._lag_next = 0

    def _stale_read(self, object_id):
        """The object as a lagging replica still shows it, or None."""
        with self._lock:
            entry = self._stale.get(object_id)
            if entry is None:
                return None
            entry[0] -= 1
            if entry[0] <= 0:
                del self._stale[object_id]
            self.counters["stale reads"] += 1
            return entry[1]

    def set_disabled_plans(self, user_key, sku_id, plans):
        """Switch service plans off in a user's licence, as an admin would (tests, demos)."""
        with self.host.session() as lab:
            user = lab.cloud_user(user_key)
            lic = user.license(sku_id) if user is not None else None
            if lic is None:
                raise KeyError(f"{user_key} has no licence {sku_id}")
            with self._lock:
                self._disabled[(user.id, sku_id)] = (lic, list(plans))

    def disabled_plans(self, user, sku_id):
        """The disabledPlans of ``user``'s licence ``sku_id`` (a list; empty when none)."""
        with self._lock:
            entry = self._disabled.get((user.id, sku_id))
        lic = user.license(sku_id)
        return list(entry[1]) if entry and lic is not None and entry[0] is lic else []

    # ------------------------------------------------------------------ plumbing

    def _count(self, key, n=1):
        with self._lock:
            self.counters[key] += n

    def force_faults(self, *kinds, items=False):
        """Make the next requests (or, with ``items``, the next batch items) fail, in order.

        Kinds: "503", "504", "drop" (before anything is done), "504-after",
        "drop-after" (the write is applied, then the answer is lost), "html" (a 200
        with an HTML page, as a captive proxy answers; nothing is done).
        """
        with self._lock:
            (self._forced_items if items else self._forced).extend(kinds)

    def _roll(self, write, can_drop):
        """None, or (kind, after): kind "503"/"504"/"drop"; ``after`` = apply the write first."""
        forced = self._forced if can_drop else self._forced_items
        with self._lock:
            if forced:
                kind = forced.popleft()
                return kind.removesuffix("-after"), kind.endswith("-after")
        if not self.fault_rate:
            return None
        with self._lock:
            if self._rng.random() >= self.fault_rate:
                return None
            after = write and self._rng.random() < 0.5
            kinds = ["504", "drop"] if after else ["503", "504", "drop"]
            if not can_drop:
                kinds.remove("drop")
            return self._rng.choice(kinds), after

    def _fault_reply(self, kind):
        self._count("faults")
        if kind == "drop":
            self._count("dropped")
            return _Reply(drop=True)
        if kind == "html":
            return _Reply(200, html="<html><head><title>Proxy</title></head><body>Please sign in to continue.</body></html>")
        if kind == "503":
            return _error(503, "serviceNotAvailable", "The service is temporarily unavailable. Please retry later.", {"Retry-After": "0"})
        return _error(504, "UnknownError", "The gateway timed out waiting for the backend.")

    def _throttle(self, cost):
        if self.bucket is None:
            return None
        wait = self.bucket.take(cost)
        if not wait:
            return None
        self._count("throttled")
        if self.retry_after is not None:
            after = str(self.retry_after)
        else:
            # Graph sends whole seconds; ask for enough to refill a batch's worth.
            refill = (min(self.bucket.capacity, MAX_BATCH) - self.bucket.tokens) / self.bucket.rate
            after = str(max(1, math.ceil(max(wait, refill))))
        self._note_quiet(float(after))
        return _error(
            429,
            "TooManyRequests",
            "Too many requests. Please retry after the time given in the Retry-After header.",
            {"Retry-After": after},
        )

    #: Requests already on their way when a 429 is answered are not early: they arrive
    #: within this many seconds of it (loopback, a batch of 20 answered in milliseconds).
    IN_FLIGHT_GRACE = 0.25

    def _note_quiet(self, after):
        now = time.monotonic()
        with self._lock:
            start, until = self._quiet
            if now >= until:  # a new window; a 429 inside the current one only extends it
                start = now + self.IN_FLIGHT_GRACE
            self._quiet = (start, max(until, now + after))

    def _note_arrival(self):
        now = time.monotonic()
        with self._lock:
            start, until = self._quiet
            if start < now < until:
                self.counters["early"] += 1

    def lab_date(self):
        """The lab's clock as an HTTP date (the Date header, which clients may read as 'now')."""
        with self.host.session(writes=False) as lab:
            moment = EPOCH + dt.timedelta(minutes=lab.clock)
        return email.utils.format_datetime(moment, usegmt=True)

    # ------------------------------------------------------------------ requests

    @staticmethod
    def internal_error(exc):
        """The answer to a request the emulator itself failed on: a 500, as Graph's own."""
        return _error(500, "InternalServerError", f"emulator error: {type(exc).__name__}: {exc}")

    def handle(self, method, target, headers, body):
        """One top-level HTTP request; returns a :class:`_Reply`."""
        self._count("http_requests")
        self._note_arrival()
        split = urlsplit(target)
        path = unquote(split.path)
        if not path.startswith(API_PREFIX + "/"):
            return _error(400, "BadRequest", f"Invalid version: {path.split('/')[1] if '/' in path else path}")
        rel = path[len(API_PREFIX) :]
        auth = headers.get("Authorization") or ""
        if self.token is not None:
            if not auth:
                self._count("unauthorized")
                return _error(401, "InvalidAuthenticationToken", "Access token is empty.", {"WWW-Authenticate": 'Bearer realm=""'})
            if auth != f"Bearer {self.token}":
                self._count("unauthorized")
                return _error(401, "InvalidAuthenticationToken", "Access token validation failure. Invalid audience.", {"WWW-Authenticate": 'Bearer realm=""'})
        if rel == "/$batch" and method == "POST":
            self._count("POST /$batch")
            return self._batch(body)
        route, params = _route(method, rel)
        self._count(f"{method} {route}" if route else f"{method} (unknown)")
        if route is None:
            return _error(400, "BadRequest", f"Resource not found for the segment '{rel.strip('/').split('/')[-1]}'.")
        query = _query(split.query)
        throttled = self._throttle(_cost(route, query))
        if throttled is not None:
            return throttled
        fault = self._roll(f"{method} {route}" in WRITE_ROUTES, can_drop=True)
        if fault and not fault[1]:
            return self._fault_reply(fault[0])
        reply = self._dispatch(method, route, params, query, body)
        if fault:
            return self._fault_reply(fault[0])
        return reply

    def _batch(self, body):
        try:
            payload = json.loads(body or b"{}")
            requests = payload["requests"]
            if not isinstance(requests, list):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            return _error(400, "BadRequest", "Invalid batch payload format.")
        if len(requests) > MAX_BATCH:
            return _error(400, "BadRequest", f"Number of batch requests exceeds the maximum of {MAX_BATCH}.")
        seen = []
        for item in requests:
            if not isinstance(item, dict) or "id" not in item or "method" not in item or "url" not in item:
                return _error(400, "BadRequest", "Invalid batch payload format.")
            ident = str(item["id"])
            if ident in seen:
                return _error(400, "BadRequest", f"Batch request ids must be unique: '{ident}'.")
            for dep in item.get("dependsOn") or ():
                if str(dep) not in seen:
                    return _error(400, "BadRequest", f"Request '{ident}' depends on '{dep}', which is not an earlier request.")
            seen.append(ident)
        writes = any(_is_write_item(item) for item in requests)
        fault = self._roll(writes, can_drop=True)
        if fault and not fault[1]:
            return self._fault_reply(fault[0])
        statuses, responses = {}, []
        for item in requests:
            ident = str(item["id"])
            self._count("batch_items")
            failed = [d for d in item.get("dependsOn") or () if not 200 <= statuses[str(d)] < 300]
            if failed:
                reply = _error(424, "FailedDependency", f"Dependency '{failed[0]}' failed.")
            else:
                reply = self._batch_item(item)
            statuses[ident] = reply.status
            entry = {"id": ident, "status": reply.status, "headers": {"Content-Type": "application/json", **reply.headers}}
            if reply.html is not None:
                entry["body"], entry["headers"]["Content-Type"] = reply.html, "text/html"
            elif reply.body is not None:
                entry["body"] = reply.body
            else:
                entry["headers"].pop("Content-Type")
            responses.append(entry)
        if self.shuffle_batch:
            # Graph does not promise the order of responses; ids sorted as text differ from request order.
            responses.sort(key=lambda r: r["id"])
        if fault:
            return self._fault_reply(fault[0])
        return _Reply(200, {"responses": responses})

    def _batch_item(self, item):
        method = str(item["method"]).upper()
        url = str(item["url"])
        split = urlsplit(url)
        path = unquote(split.path)
        if split.scheme:  # absolute, as msgraph-core sends them: drop everything up to the version
            if not path.startswith(API_PREFIX + "/"):
                return _error(400, "BadRequest", f"Invalid batch request URL '{url}'.")
            path = path[len(API_PREFIX) :]
        elif not path.startswith("/"):
            path = "/" + path
        route, params = _route(method, path)
        self._count(f"item {method} {route}" if route else f"item {method} (unknown)")
        if route is None:
            return _error(400, "BadRequest", f"Resource not found for the segment '{path.strip('/').split('/')[-1]}'.")
        query = _query(split.query)
        throttled = self._throttle(_cost(route, query))
        if throttled is not None:
            return throttled
        fault = self._roll(f"{method} {route}" in WRITE_ROUTES, can_drop=False)
        if fault and not fault[1]:
            return self._fault_reply(fault[0])
        body = item.get("body")
        raw = json.dumps(body).encode() if body is not None else b""
        reply = self._dispatch(method, route, params, query, raw)
        if fault:
            return self._fault_reply(fault[0])
        return reply

    # ------------------------------------------------------------------ endpoints

    def _dispatch(self, method, route, params, query, body):
        route = f"{method} {route}"
        if route in self.unavailable:
            return _error(503, "serviceNotAvailable", "The service is temporarily unavailable.")
        permission = ROUTE_PERMISSIONS.get(route)
        if permission in self.denied:
            if route.endswith("mailboxSettings"):
                return _error(403, "ErrorAccessDenied", "Access is denied. Check credentials and try again.")
            return _error(403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation.")
        handler = {
            "GET /users": self._list_users,
            "GET /users/{id}": self._get_user,
            "GET /users/{id}/mailboxSettings": self._mailbox_settings,
            "POST /users/{id}/assignLicense": self._assign_license,
            "GET /subscribedSkus": self._subscribed_skus,
            "GET /directory/deletedItems/graph.user": self._list_deleted,
            "GET /directory/deletedItems/{id}": self._get_deleted,
            "DELETE /directory/deletedItems/{id}": self._delete_deleted,
            "GET /groups": self._list_groups,
            "GET /groups/{id}": self._get_group,
            "GET /groups/{id}/members": self._group_members,
            "GET /users/{id}/memberOf": self._member_of,
            "POST /groups/{id}/members/$ref": self._add_member,
            "POST /users/{id}/reprocessLicenseAssignment": self._reprocess,
        }[route]
        return handler(params, query, body)

    def _select(self, query, allowed=USER_PROPERTIES, default=DEFAULT_USER_PROPERTIES):
        raw = query.get("$select")
        if not raw:
            return default, None
        fields = tuple(f.strip() for f in raw.split(",") if f.strip())
        for name in fields:
            if name not in allowed:
                return None, _error(400, "Request_BadRequest", f"Could not find a property named '{name}' on type 'microsoft.graph.user'.")
        return fields, None

    def _page(self, query, items, render, path):
        """Page ``items()`` by ``$top`` and an opaque ``$skiptoken``; an absolute nextLink."""
        top = query.get("$top")
        if top is None:
            size = DEFAULT_PAGE
        else:
            try:
                size = int(top)
            except ValueError:
                size = 0
            if not 1 <= size <= MAX_PAGE:
                return _error(
                    400, "Request_UnsupportedQuery", f"Invalid page size specified: '{top}'. Must be between 1 and {MAX_PAGE} inclusive."
                )
        offset = 0
        token = query.get("$skiptoken")
        if token:
            try:
                cursor = json.loads(base64.urlsafe_b64decode(token.encode()))
                offset, snapshot = int(cursor["o"]), cursor["s"]
            except (ValueError, KeyError, TypeError):
                return _error(400, "Request_UnsupportedQuery", "The specified page token value has expired or is invalid.")
            with self._lock:
                frozen_items = self._snapshots.get(snapshot)
            if frozen_items is None:
                return _error(400, "Request_UnsupportedQuery", "The specified page token value has expired or is invalid.")
        else:
            # The listing a skiptoken walks is fixed at the first page (computing it per page
            # would make paging 100k users quadratic).
            snapshot, frozen_items = uuid.uuid4().hex, items()
            with self._lock:
                self._snapshots[snapshot] = frozen_items
                while len(self._snapshots) > 16:
                    self._snapshots.popitem(last=False)
        items = frozen_items
        chunk = items[offset : offset + size]
        body = {"@odata.context": f"{self.base_url}/$metadata#users", "value": [render(x) for x in chunk]}
        if offset + size < len(items):
            nxt = dict((k, v) for k, v in query.items() if k != "$skiptoken")
            nxt["$skiptoken"] = base64.urlsafe_b64encode(json.dumps({"o": offset + size, "s": snapshot}).encode()).decode()
            body["@odata.nextLink"] = f"{self.base_url}{path}?" + urlencode(nxt, safe="$,'", quote_via=quote)
        return _Reply(200, body)

    def _user_json(self, user, fields):
        data = {}
        for name in fields:
            if name == "id":
                data[name] = user.id
            elif name == "userPrincipalName":
                data[name] = user.upn
            elif name == "displayName":
                data[name] = user.display_name or None
            elif name == "mail":
                data[name] = user.upn if user.mailbox_ready_at is not None else None
            elif name == "accountEnabled":
                data[name] = True
            elif name == "onPremisesSyncEnabled":
                data[name] = user.synced
            elif name == "onPremisesDistinguishedName":
                data[name] = user.on_prem_dn
            elif name == "onPremisesImmutableId":
                data[name] = user.immutable_id
            elif name == "usageLocation":
                data[name] = user.usage_location
            elif name == "assignedLicenses":
                data[name] = [{"disabledPlans": self.disabled_plans(user, lic.sku_id), "skuId": lic.sku_id} for lic in user.licenses]
            elif name == "licenseAssignmentStates":
                data[name] = [
                    {
                        "assignedByGroup": (lic.group_id or lab_guid("group", lic.sku_id)) if lic.by_group else None,
                        "disabledPlans": self.disabled_plans(user, lic.sku_id),
                        "error": "None",
                        "lastUpdatedDateTime": minute_to_iso(lic.assigned_at),
                        "skuId": lic.sku_id,
                        "state": "Active",
                    }
                    for lic in user.licenses
                ]
            elif name == "assignedPlans":
                data[name] = self.assigned_plans(user)
            elif name == "deletedDateTime":
                data[name] = minute_to_iso(user.deleted_at) if user.deleted_at is not None else None
        return data

    def assigned_plans(self, user):
        """Graph's assignedPlans: the enabled plans of the licences held now, and an Exchange
        plan once assigned and since removed as "Deleted". Lab assumption: only the Exchange
        plan's history is kept (the other plans of a removed licence are not listed)."""
        lab = self.host.lab
        plans = []
        for lic in user.licenses:
            sku = lab.sku(lic.sku_id)
            if sku is None:
                continue
            off = set(self.disabled_plans(user, lic.sku_id)) | set(lic.disabled_plans)
            named = ([EXCHANGE_PLAN] if sku.includes_exchange else []) + OTHER_PLANS[sku.includes_exchange]
            for name, pid in named:
                if pid not in off:
                    plans.append(_assigned_plan(lic.assigned_at, "Enabled", name, pid))
        exchange_now = any(p["servicePlanId"] == EXCHANGE_PLAN[1] for p in plans)
        if user.exchange_plan_since is not None and not exchange_now:
            plans.append(_assigned_plan(user.exchange_plan_since, "Deleted", *EXCHANGE_PLAN))
        return plans

    def _list_users(self, params, query, body):
        fields, problem = self._select(query)
        if problem:
            return problem
        flt = " ".join((query.get("$filter") or "").split()).lower()
        if flt not in ("", "onpremisessyncenabled eq true"):
            return _error(400, "Request_UnsupportedQuery", "Unsupported or invalid query filter clause specified for property 'onPremisesSyncEnabled' of resource 'User'.")
        with self.host.session(writes=False) as lab:
            users = lambda: [u for u in lab.cloud_users if u.deleted_at is None and (not flt or u.synced is True)]  # noqa: E731
            return self._page(query, users, lambda u: self._user_json(u, fields), "/users")

    def _get_user(self, params, query, body):
        fields, problem = self._select(query)
        if problem:
            return problem
        with self.host.session(writes=False) as lab:
            user = lab.cloud_user(params["id"])
            if user is None:
                return _not_found(params["id"])
            user = self._stale_read(user.id) or user
            data = {"@odata.context": f"{self.base_url}/$metadata#users/$entity", **self._user_json(user, fields)}
        return _Reply(200, data)

    def _mailbox_settings(self, params, query, body):
        with self.host.session(writes=False) as lab:
            user = lab.cloud_user(params["id"])
            if user is None:
                return _not_found(params["id"])
            state = lab.mailbox_state(user)
            upn = user.upn
        if state != "present":
            code = self.no_mailbox_codes.get(upn.lower(), "MailboxNotEnabledForRESTAPI")
            return _error(404, code, NO_MAILBOX_MESSAGES[code])
        return _Reply(
            200,
            {
                "@odata.context": f"{self.base_url}/$metadata#users('{params['id']}')/mailboxSettings",
                "archiveFolder": "",
                "timeZone": "UTC",
                "dateFormat": "M/d/yyyy",
                "timeFormat": "h:mm tt",
                "userPurpose": "user",
                "language": {"locale": "en-US", "displayName": "English (United States)"},
                "automaticRepliesSetting": {"status": "disabled", "externalAudience": "all"},
            },
        )

    def _assign_license(self, params, query, body):
        try:
            payload = json.loads(body or b"{}")
        except ValueError:
            return _error(400, "BadRequest", "Unable to read JSON request payload.")
        missing = [k for k in ("addLicenses", "removeLicenses") if not isinstance(payload, dict) or payload.get(k) is None]
        if missing:
            return _error(
                400,
                "Request_BadRequest",
                f"One or more parameters of the operation 'assignLicense' are missing from the request payload. The missing parameters are: {', '.join(missing)}.",
            )
        adds = [a.get("skuId") for a in payload["addLicenses"] if isinstance(a, dict)]
        # An add sets the SKU's disabledPlans for the user (none given: none disabled).
        wanted = {a.get("skuId"): [str(p) for p in a.get("disabledPlans") or ()] for a in payload["addLicenses"] if isinstance(a, dict)}
        removes = list(payload["removeLicenses"])
        key = params["id"]
        with self.host.session() as lab:
            user = lab.cloud_user(key)
            if user is None:
                return _not_found(key)
            # assignLicense is one transaction: on any refusal nothing changes.
            before = (user.licenses, user.mailbox_ready_at)  # a tuple: the licences as they were
            snapshot = copy.deepcopy(user) if self._lag_next else None
            effects = []
            try:
                for sku in removes:
                    lab.remove_license(user.id, sku)
                    effects.append(("remove", sku, "applied"))
                for sku in adds:
                    had = user.license(sku) is not None
                    lab.assign_license(user.id, sku)
                    effects.append(("add", sku, "noop" if had else "applied"))
            except ProviderError as exc:
                user.licenses, user.mailbox_ready_at = before
                with self._lock:
                    self.writes.append(("assignLicense", user.id, f"+{adds} -{removes}", "refused"))
                status = 404 if "does not exist" in exc.message else 400
                return _error(status, "Request_BadRequest" if status == 400 else "Request_ResourceNotFound", exc.message)
            if snapshot is not None:
                self._lag(user.id, snapshot)
            with self._lock:
                for sku in removes:
                    self._disabled.pop((user.id, sku), None)
                for sku in adds:
                    if wanted.get(sku):
                        self._disabled[(user.id, sku)] = (user.license(sku), wanted[sku])
                    else:
                        self._disabled.pop((user.id, sku), None)
                for what, sku, effect in effects:
                    self.writes.append(("assignLicense", user.id, f"{what} {sku}", effect))
            data = {"@odata.context": f"{self.base_url}/$metadata#users/$entity", **self._user_json(user, DEFAULT_USER_PROPERTIES)}
        return _Reply(200, data)

    def _subscribed_skus(self, params, query, body):
        with self.host.session(writes=False) as lab:
            consumed = lab.consumed_units()
            value = []
            for sku in lab.skus:
                plans = ([EXCHANGE_PLAN] if sku.includes_exchange else []) + OTHER_PLANS[sku.includes_exchange]
                value.append(
                    {
                        "accountId": TENANT_ID,
                        "accountName": "contoso",
                        "appliesTo": "User",
                        "capabilityStatus": "Enabled",
                        "consumedUnits": consumed.get(sku.sku_id, 0),
                        "id": f"{TENANT_ID}_{sku.sku_id}",
                        "skuId": sku.sku_id,
                        "skuPartNumber": sku.part_number,
                        "subscriptionIds": [lab_guid("subscription", sku.sku_id)],
                        "prepaidUnits": {"enabled": sku.prepaid, "suspended": 0, "warning": 0, "lockedOut": 0},
                        "servicePlans": [
                            {"servicePlanId": pid, "servicePlanName": name, "provisioningStatus": "Success", "appliesTo": "User"} for name, pid in plans
                        ],
                    }
                )
        fields = query.get("$select")
        if fields:
            keep = {f.strip() for f in fields.split(",")}
            value = [{k: v for k, v in sku.items() if k in keep} for sku in value]
        return _Reply(200, {"@odata.context": f"{self.base_url}/$metadata#subscribedSkus", "value": value})

    def _deleted_json(self, user, fields):
        data = {"@odata.type": "#microsoft.graph.user"}
        base = self._user_json(user, [f for f in fields if f != "userPrincipalName"])
        data.update(base)
        if "userPrincipalName" in fields:
            # Graph prefixes a deleted user's UPN with its object id, without dashes.
            data["userPrincipalName"] = user.id.replace("-", "") + user.upn
        return data

    def _list_deleted(self, params, query, body):
        fields, problem = self._select(query)
        if problem:
            return problem
        with self.host.session(writes=False) as lab:
            users = lambda: [u for u in lab.cloud_users if u.deleted_at is not None]  # noqa: E731
            return self._page(query, users, lambda u: self._deleted_json(u, fields), "/directory/deletedItems/microsoft.graph.user")

    def _get_deleted(self, params, query, body):
        fields, problem = self._select(query)
        if problem:
            return problem
        with self.host.session(writes=False) as lab:
            user = self._stale_read(params["id"]) or lab.deleted_user(params["id"])
            if user is None:
                return _not_found(params["id"])
            return _Reply(200, self._deleted_json(user, fields))

    def _delete_deleted(self, params, query, body):
        key = params["id"]
        with self.host.session() as lab:
            snapshot = copy.deepcopy(lab.deleted_user(key)) if self._lag_next else None
            try:
                lab.purge_deleted_user(key)
            except ProviderError as exc:
                with self._lock:
                    self.writes.append(("purge", key, "", "refused"))
                return _error(404, "Request_ResourceNotFound", exc.message)
            if snapshot is not None:
                self._lag(snapshot.id, snapshot)
            with self._lock:
                self.writes.append(("purge", key, "", "applied"))
        return _Reply(204)


    # ------------------------------------------------------------------ groups (group-based licensing)

    def _group_json(self, group):
        return {
            "id": group.id,
            "displayName": group.display_name,
            "securityEnabled": True,
            "mailEnabled": False,
            "assignedLicenses": [{"disabledPlans": list(g.disabled_plans), "skuId": g.sku_id} for g in group.licenses],
        }

    def _list_groups(self, params, query, body):
        flt = " ".join((query.get("$filter") or "").split())
        match = re.fullmatch(r"displayName eq '((?:[^']|'')*)'", flt, re.I)
        if flt and match is None:
            return _error(400, "Request_UnsupportedQuery", "Unsupported or invalid query filter clause specified for property 'displayName' of resource 'Group'.")
        name = match.group(1).replace("''", "'").lower() if match else None
        with self.host.session(writes=False) as lab:
            groups = [self._group_json(g) for g in lab.groups if name is None or g.display_name.lower() == name]
        return _Reply(200, {"@odata.context": f"{self.base_url}/$metadata#groups", "value": groups})

    def _get_group(self, params, query, body):
        with self.host.session(writes=False) as lab:
            group = next((g for g in lab.groups if g.id == params["id"]), None)
            if group is None:
                return _not_found(params["id"])
            return _Reply(200, {"@odata.context": f"{self.base_url}/$metadata#groups/$entity", **self._group_json(group)})

    def _group_members(self, params, query, body):
        with self.host.session(writes=False) as lab:
            group = next((g for g in lab.groups if g.id == params["id"]), None)
            if group is None:
                return _not_found(params["id"])
            members = list(group.members)
            render = lambda m: {"@odata.type": "#microsoft.graph.user", "id": m}  # noqa: E731
            return self._page(query, lambda: members, render, f"/groups/{params['id']}/members")

    def _member_of(self, params, query, body):
        with self.host.session(writes=False) as lab:
            user = lab.cloud_user(params["id"])
            if user is None:
                return _not_found(params["id"])
            groups = [{"@odata.type": "#microsoft.graph.group", "id": g.id} for g in lab.groups if user.id in g.members]
        return _Reply(200, {"@odata.context": f"{self.base_url}/$metadata#directoryObjects", "value": groups})

    def _add_member(self, params, query, body):
        try:
            payload = json.loads(body or b"{}")
        except ValueError:
            return _error(400, "BadRequest", "Unable to read JSON request payload.")
        ref = payload.get("@odata.id") if isinstance(payload, dict) else None
        match = re.search(r"/directoryObjects/([^/?]+)$", ref or "")
        if match is None:
            return _error(400, "Request_BadRequest", "Invalid URL format specified in @odata.id.")
        with self.host.session() as lab:
            try:
                lab.add_group_member(params["id"], match.group(1))
            except ProviderError as exc:
                with self._lock:
                    self.writes.append(("addMember", params["id"], match.group(1), "refused"))
                status = 404 if "does not exist" in exc.message else 400
                return _error(status, "Request_BadRequest" if status == 400 else "Request_ResourceNotFound", exc.message)
            with self._lock:
                self.writes.append(("addMember", params["id"], match.group(1), "applied"))
        return _Reply(204)

    def _reprocess(self, params, query, body):
        with self.host.session() as lab:
            try:
                user = lab.reprocess_license_assignment(params["id"])
            except ProviderError as exc:
                return _error(404, "Request_ResourceNotFound", exc.message)
            with self._lock:
                self.writes.append(("reprocessLicenseAssignment", user.id, "", "applied"))
            data = {"@odata.context": f"{self.base_url}/$metadata#users/$entity", **self._user_json(user, DEFAULT_USER_PROPERTIES)}
        return _Reply(200, data)


def _is_write_item(item):
    method = str(item.get("method", "")).upper()
    return method in ("POST", "PATCH", "PUT", "DELETE")


def _query(raw):
    return {k: v[-1] for k, v in parse_qs(raw, keep_blank_values=True).items()}


def _route(method, path):
    """(route template, params) for a path below the version, or (None, {})."""
    parts = [p for p in path.split("/") if p]
    n = len(parts)
    if n >= 1 and parts[0] == "users":
        if n == 1 and method == "GET":
            return "/users", {}
        if n == 2 and method == "GET":
            return "/users/{id}", {"id": parts[1]}
        if n == 3 and parts[2] == "mailboxSettings" and method == "GET":
            return "/users/{id}/mailboxSettings", {"id": parts[1]}
        if n == 3 and parts[2] == "assignLicense" and method == "POST":
            return "/users/{id}/assignLicense", {"id": parts[1]}
        if n == 3 and parts[2] == "memberOf" and method == "GET":
            return "/users/{id}/memberOf", {"id": parts[1]}
        if n == 3 and parts[2] == "reprocessLicenseAssignment" and method == "POST":
            return "/users/{id}/reprocessLicenseAssignment", {"id": parts[1]}
    if n >= 1 and parts[0] == "groups":
        if n == 1 and method == "GET":
            return "/groups", {}
        if n == 2 and method == "GET":
            return "/groups/{id}", {"id": parts[1]}
        if n == 3 and parts[2] == "members" and method == "GET":
            return "/groups/{id}/members", {"id": parts[1]}
        if n == 4 and parts[2:] == ["members", "$ref"] and method == "POST":
            return "/groups/{id}/members/$ref", {"id": parts[1]}
    if parts == ["subscribedSkus"] and method == "GET":
        return "/subscribedSkus", {}
    if n == 3 and parts[:2] == ["directory", "deletedItems"]:
        if parts[2] in ("microsoft.graph.user", "graph.user") and method == "GET":
            return "/directory/deletedItems/graph.user", {}
        if method == "GET":
            return "/directory/deletedItems/{id}", {"id": parts[2]}
        if method == "DELETE":
            return "/directory/deletedItems/{id}", {"id": parts[2]}
    return None, {}


def _cost(route, query):
    """Resource units (domain-facts B8): GET /users 2, subscribedSkus 3, $select one less."""
    cost = {"/users": 2, "/subscribedSkus": 3, "/directory/deletedItems/graph.user": 2}.get(route, 1)
    if query.get("$select"):
        cost -= 1
    return max(cost, 1)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # A client that hung up (a test's dropped connection, a cancelled request) is not news.
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _TLSServer(_Server):
    """HTTPS; HTTP/2 when the client offers it (ALPN), else HTTP/1.1 by the same handler."""

    def finish_request(self, request, client_address):
        import ssl

        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return  # a client that does not trust the certificate, or hung up
        try:
            if tls.selected_alpn_protocol() == "h2":
                from providers.lab.tls import serve_h2

                serve_h2(tls, self.emulator)
            else:
                self.RequestHandlerClass(tls, client_address, self)
        finally:
            tls.close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body are two writes: without TCP_NODELAY, Nagle and delayed ACKs add ~40 ms a request.
    disable_nagle_algorithm = True
    def version_string(self):
        return "syncprep-graph-emulator/1"

    def log_message(self, format, *args):  # noqa: A002 - the stdlib's signature
        pass

    def date_time_string(self, timestamp=None):
        return self._date or super().date_time_string(timestamp)

    def _serve(self):
        self._date = None
        emulator = self.server.emulator
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        # The Date is the lab time the request arrived at, before its items are read: a batch's
        # answers are then never older than the "now" a client reads from it. Taken after them, a
        # mailbox read as not there yet came under a Date saying its window had closed, and was
        # called absent; in a test the lab runs 600 minutes a real second, so a batch lasts lab
        # minutes (real Graph answers a batch in milliseconds against windows of minutes).
        date = emulator.lab_date()
        try:
            reply = emulator.handle(self.command, self.path, self.headers, body)
        except Exception as exc:  # noqa: BLE001 - an emulator bug answers 500, as Graph would
            reply = _error(500, "InternalServerError", f"emulator error: {type(exc).__name__}: {exc}")
        if reply.drop:
            # The connection goes away without an answer: the client cannot know what happened.
            self.close_connection = True
            return
        self._date = date
        payload = b"" if reply.body is None else json.dumps(reply.body).encode()
        self.send_response(reply.status)
        if reply.html is not None:
            payload = reply.html.encode()
            self.send_header("Content-Type", "text/html; charset=utf-8")
        elif reply.body is not None:
            self.send_header("Content-Type", "application/json; odata.metadata=minimal; odata.streaming=true; IEEE754Compatible=false; charset=utf-8")
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("request-id", str(uuid.uuid4()))
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if payload:
            self.wfile.write(payload)

    do_GET = do_POST = do_DELETE = do_PATCH = do_PUT = _serve


__all__ = ["GraphEmulator", "TokenBucket"]
