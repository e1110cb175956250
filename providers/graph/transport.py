"""The one choke point between the Graph provider and Microsoft Graph.

Requests go through msgraph-sdk's request adapter (its auth provider and
middleware), but the answer is read as raw JSON from the native response
(domain-facts E2): no typed-model deserialization, and the status, ``Retry-After``
and ``Date`` headers stay visible. Retrying is done here, not by the SDK's
RetryHandler, which is switched off per request because it replays POSTs blindly
on 503/504 and never looks inside a ``$batch`` (domain-facts D7, E5).

Rules:

* reads (GET) are retried on 429, 5xx and lost connections, honouring ``Retry-After``;
* a write whose outcome is unknown (5xx, lost connection) is re-read first, after
  ``reread_delay`` seconds (directory replicas lag behind a write), and sent again
  only if two re-reads that far apart both show it was not made; a write sent again
  that is answered "already so" (``Item.already``) counts as made;
* a 429 is never an unknown outcome: Graph did not act on it;
* everyone waits out a ``Retry-After``: one throttled request pauses all senders;
* once throttled, batch items are paced at the rate Graph was seen to accept (see
  :class:`Pacer`), so the limit is met by spacing requests rather than by more 429s;
* at most ``concurrency`` requests are in flight.

This module imports httpx, kiota and msgraph: import it only when a request is due.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
from collections import Counter
from typing import Any, Callable, Optional
from urllib.parse import quote

import httpx
from attrs import define, field
from kiota_abstractions.method import Method
from kiota_abstractions.native_response_handler import NativeResponseHandler
from kiota_abstractions.request_information import RequestInformation
from kiota_http.middleware.options import ResponseHandlerOption, RetryHandlerOption

from reconciler.errors import ProviderError
from reconciler.redact import quiet_header_blocks

#: How often a batch run reports its progress (seconds).
PROGRESS_SECONDS = 1.0
log = logging.getLogger("syncprep.graph")


# hpack logs HTTP/2 header blocks at DEBUG: never let them out (reconciler.redact).
quiet_header_blocks()

MAX_BATCH = 20
PAGE_SIZE = 999
UNKNOWN_OUTCOME = frozenset({500, 502, 503, 504})
NOT_SENT = frozenset({"ConnectError", "ConnectTimeout", "PoolTimeout"})


@define
class Response:
    """One Graph answer, top-level or a batch item. ``status`` None: the connection was lost."""

    status: Optional[int]
    headers: dict = field(factory=dict)
    data: Any = None
    detail: str = ""
    #: The server's clock when it answered (Date header; for a batch item, the batch's).
    date: Any = None

    @property
    def ok(self):
        return self.status is not None and 200 <= self.status < 300

    @property
    def code(self):
        return ((self.data or {}).get("error") or {}).get("code", "") if isinstance(self.data, dict) else ""

    @property
    def message(self):
        """Graph's error text, scrubbed: a server (or a proxy) may echo the Authorization header."""
        from reconciler.redact import scrub

        if isinstance(self.data, dict) and isinstance(self.data.get("error"), dict):
            return scrub(self.data["error"].get("message", ""))
        return scrub(self.detail)

    @property
    def unsent(self):
        """The request never left: no connection could be made, so nothing can have happened."""
        return self.status is None and self.detail in NOT_SENT

    def describe(self):
        if self.unsent:
            return f"cannot connect ({self.detail})"
        if self.status is None:
            return f"connection lost ({self.detail})"
        return f"{self.status} {self.code}".strip()


@define
class GaveUp:
    """An item the transport stopped retrying; ``reason`` is one line for the user."""

    reason: str
    status: None = None
    ok: bool = False


@define
class Item:
    """One per-user call to send in a ``$batch``.

    ``url`` is relative to the version (``/users/{id}/mailboxSettings``). A write
    carries ``reread`` (a GET url) and ``decide(response) -> "done" | "again" | str``,
    which says from the re-read whether the write was made ("done"), was not
    ("again"), or cannot be (a reason). ``already(response) -> bool`` recognises
    the refusal a write meets when it was made already (a removal of a licence the
    user no longer has): when the write was sent again after an unknown outcome,
    that refusal means the first one was made.
    """

    method: str
    url: str
    body: Any = None
    reread: Optional[str] = None
    decide: Optional[Callable[[Response], str]] = None
    already: Optional[Callable[[Response], bool]] = None

    @property
    def write(self):
        return self.method != "GET"


class Pacer:
    """Spaces batch items at the rate Graph accepts, learned from its 429s.

    Graph does not say its limit, only when it was met. Nothing is paced until two
    429s have come: the items Graph accepted between them, over the time between
    them (the Retry-After wait included, during which its bucket refilled), is the
    rate it allows. Items are then sent at ``margin`` times that: a little too fast
    costs a 429 now and then, a little too slow loses throughput for good. The rate
    grows by ``probe`` for each second without a 429 (a limit can rise, and a 429
    can come below it: domain-facts B7); each 429 measures it again. A gap of
    ``idle`` seconds with no answer (a Retry-After wait does not count) forgets the
    rate: what comes next may be other work, under another limit.

    Times are the caller's clock, in seconds; nothing here sleeps.
    """

    def __init__(self, margin=1.1, probe=0.02, idle=2.0):
        self.margin = margin
        self.probe = probe
        self.idle = idle
        #: Items per second, or None while unpaced.
        self.rate = None
        self._throttled_at = None  # the 429 that opened the current measurement
        self._accepted = 0  # items accepted since then
        self._last = None  # when Graph last answered, or the end of the Retry-After waited out
        self._grown_at = 0.0
        self._next = 0.0  # the earliest time the next items may leave

    def accepted(self, now, items):
        """``items`` of a batch were answered with anything but a 429."""
        if self._last is not None and now - self._last > self.idle:
            self.rate = self._throttled_at = None
            self._accepted = 0
        self._last = now if self._last is None else max(self._last, now)
        self._accepted += items
        if self.rate is not None and now > self._grown_at:
            self.rate *= (1 + self.probe) ** (now - self._grown_at)
            self._grown_at = now

    def throttled(self, now, after):
        """A 429 that made the senders pause for ``after`` seconds (not one more of the same pause)."""
        # Nothing accepted in between says only "still throttled", which the Retry-After covers.
        if self._throttled_at is not None and now > self._throttled_at and self._accepted:
            self.rate = self.margin * self._accepted / (now - self._throttled_at)
            self._grown_at = now + after
        self._throttled_at = now
        self._accepted = 0
        # Slots reserved before it stand: those senders go when the wait ends, at most
        # ``concurrency`` batches at once, which Graph's refilled bucket takes (holding
        # them back for new slots measured 1% slower, with no fewer 429s).
        self._last = self._next = now + after

    def delay(self, now, items):
        """Seconds to wait before sending ``items``; reserves their time."""
        if self.rate is None:
            return 0.0
        start = max(now, self._next)
        self._next = start + items / self.rate
        return start - now


#: The SSL contexts made so far in this process, by where their CAs came from (see _verify).
_CONTEXTS = {}


def _verify(ca_bundle):
    """httpx's ``verify``: the system's CAs (the context httpx makes for ``verify=True``: certifi's,
    or SSL_CERT_FILE's or SSL_CERT_DIR's when set), or those of a PEM bundle the operator named.

    Made once per process for each source (the bundle's file as it is now: path, size, time
    written) and shared by the clients: loading the CAs cost each client about 20 ms of CPU
    (issue 19). An SSL context is made to be shared; each client still has its connections."""
    import os

    if not ca_bundle:
        key = ("system", os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))
        make = httpx.create_ssl_context
    else:
        try:
            stat = os.stat(ca_bundle)
        except OSError:  # the context says what is wrong with it, as before
            key = None
        else:
            key = ("bundle", os.path.abspath(ca_bundle), stat.st_size, stat.st_mtime_ns, stat.st_ino)

        def make():
            import ssl

            return ssl.create_default_context(cafile=ca_bundle)

    context = _CONTEXTS.get(key) if key is not None else None
    if context is None:
        context = make()
        if key is not None:
            _CONTEXTS[key] = context
    return context


def user_path(key):
    return quote(key, safe="@")


class GraphTransport:
    """Send requests to ``base_url`` with ``auth_provider``; see the module docstring."""

    def __init__(
        self,
        base_url,
        auth_provider,
        *,
        auth_hint="",
        concurrency=4,
        max_attempts=8,
        backoff=1.0,
        max_retry_after=300.0,
        timeout=100.0,
        reread_delay=2.0,
        ca_bundle=None,
    ):
        from msgraph import GraphRequestAdapter, GraphServiceClient
        from msgraph_core import GraphClientFactory

        self.base_url = base_url.rstrip("/")
        self.auth_hint = auth_hint
        self.concurrency = concurrency
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.max_retry_after = max_retry_after
        self.reread_delay = reread_delay
        no_retry = {RetryHandlerOption.get_key(): RetryHandlerOption(delay=0.0, max_retries=0, should_retry=False)}
        limits = httpx.Limits(max_connections=concurrency * 2, max_keepalive_connections=concurrency * 2)
        self._http = GraphClientFactory.create_with_default_middleware(
            client=httpx.AsyncClient(
                timeout=httpx.Timeout(timeout, connect=30.0), limits=limits, http2=True, verify=_verify(ca_bundle)
            ), options=no_retry
        )
        self.adapter = GraphRequestAdapter(auth_provider, client=self._http)
        # The constructor argument is ignored; the property is what counts (domain-facts D3).
        self.adapter.base_url = self.base_url
        self.client = GraphServiceClient(request_adapter=self.adapter)
        self._options = [ResponseHandlerOption(NativeResponseHandler()), no_retry[RetryHandlerOption.get_key()]]
        self._slots = asyncio.Semaphore(concurrency)
        self._resume_at = 0.0
        self._batch_size = MAX_BATCH
        #: Reads and writes are limited apart (domain-facts B7), so each has its own pace.
        self.pacers = {"read": Pacer(), "write": Pacer()}
        #: What was sent: "requests" (HTTP), "batches", "batch_items", "throttled", "lost", "retries",
        #: "backoffs" (waits before sending failed batch items again, one per chunk), "rereads".
        self.stats = Counter()
        #: The server's clock from the last Date header (Graph's "now", not ours).
        self.server_now = None

    async def aclose(self):
        await self._http.aclose()

    # ------------------------------------------------------------------ one exchange

    def request_info(self, method, url, body=None):
        """A RequestInformation for an absolute or version-relative URL."""
        info = RequestInformation(Method[method])
        info.url = url if url.startswith(("http://", "https://")) else self.base_url + url
        if body is not None:
            info.headers.try_add("Content-Type", "application/json")
            info.content = json.dumps(body).encode()
        return info

    async def _pause(self):
        loop = asyncio.get_running_loop()
        while (delay := self._resume_at - loop.time()) > 0:
            await asyncio.sleep(delay)

    async def _paced(self, pacer, items):
        wait = pacer.delay(asyncio.get_running_loop().time(), items)
        if wait > 0:
            await asyncio.sleep(wait)
            await self._pause()  # a 429 may have come meanwhile

    def throttled(self, response):
        """Note a 429: everybody waits out its Retry-After. Returns the wait, or None if too long."""
        after = _retry_after(response.headers.get("retry-after"), self.server_now)
        if after is None:
            after = self.backoff
        if after > self.max_retry_after:
            return None
        loop = asyncio.get_running_loop()
        self._resume_at = max(self._resume_at, loop.time() + after)
        self.stats["throttled"] += 1
        return after

    async def exchange(self, info, items=0, pacer=None):
        """Send one request; a lost connection is a Response with status None (never raised).

        ``items``: the batch items it carries, spaced by ``pacer`` when given."""
        info.add_request_options(self._options)
        async with self._slots:
            await self._pause()  # inside the slot: a 429 that arrived while we queued counts too
            if pacer is not None:
                await self._paced(pacer, items)
            self.stats["requests"] += 1
            if items:
                self.stats["batches"] += 1
                self.stats["batch_items"] += items
            try:
                native = await self.adapter.send_primitive_async(info, "bytes", None)
            except httpx.TransportError as exc:
                self.stats["lost"] += 1
                log.debug("request lost: method=%s error=%s", info.http_method.value, type(exc).__name__)
                return Response(None, detail=type(exc).__name__)
            except ProviderError:
                raise
            except Exception as exc:
                # First lines only: one line for the user, and no secrets in them.
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
                if type(exc).__module__.startswith("azure."):
                    # azure-identity could not get a token; its first line says why.
                    raise ProviderError("graph", "sign-in", f"could not get a token ({self.auth_hint}): {first}") from None
                # kiota, msgraph-core or httpx failing some other way (a bad URL, a
                # malformed answer): not a traceback, one line naming what it was.
                where = f"{info.http_method.value} {info.url}"
                raise ProviderError("graph", where, f"unexpected answer from Microsoft Graph ({type(exc).__name__}: {first})") from None
        headers = {k.lower(): v for k, v in native.headers.items()}
        date = None
        if "date" in headers:
            try:
                date = email.utils.parsedate_to_datetime(headers["date"])
            except (TypeError, ValueError):
                pass
            else:
                if self.server_now is None or date > self.server_now:
                    self.server_now = date
        data = None
        if native.content:
            try:
                data = json.loads(native.content)
            except ValueError:
                data = None
        log.debug("request: method=%s status=%d", info.http_method.value, native.status_code)
        return Response(native.status_code, headers, data, detail=native.reason_phrase or "", date=date)

    # ------------------------------------------------------------------ reads

    async def get(self, make_info, resource, permission):
        """A top-level read with retries. Returns 2xx and 404 answers; raises for the rest."""
        attempts = 0
        while True:
            response = await self.exchange(make_info())
            attempts += 1 if response.status != 429 else 0.25
            if response.ok or response.status == 404:
                return response
            if response.status == 429:
                if self.throttled(response) is None:
                    raise ProviderError("graph", resource, self.too_long(response))
            elif response.status is not None and response.status not in UNKNOWN_OUTCOME:
                raise self.error(response, resource, permission)
            if attempts >= self.max_attempts:
                raise ProviderError("graph", resource, self.exhausted(response))
            self.stats["retries"] += 1
            if response.status != 429:
                await asyncio.sleep(self._backoff(attempts, response))

    async def pages(self, make_info, resource, permission):
        """Yield the ``value`` of each page, following absolute ``@odata.nextLink``s."""
        response = await self.get(make_info, resource, permission)
        while True:
            if not response.ok:
                raise self.error(response, resource, permission)
            if not isinstance(response.data, dict) or not isinstance(response.data.get("value", []), list):
                raise self.unexpected(response, resource)
            yield response.data.get("value") or []
            link = response.data.get("@odata.nextLink")
            if not link:
                return
            response = await self.get(lambda link=link: self.request_info("GET", link), resource, permission)

    def _backoff(self, attempts, response):
        after = _retry_after(response.headers.get("retry-after"), self.server_now) if response.status else None
        if after is None:
            after = self.backoff * 2 ** (attempts - 1)
        return min(after, 30.0)

    def too_long(self, response):
        return (
            f"throttled by Microsoft Graph: it asks to wait {response.headers.get('retry-after')} s, "
            f"beyond the retry budget of {self.max_retry_after:g} s"
        )

    def exhausted(self, response):
        if response.status == 429:
            return f"throttled by Microsoft Graph beyond the retry budget ({self.max_attempts} attempts, a 429 counting a quarter)"
        return f"Microsoft Graph kept failing ({response.describe()}) after {self.max_attempts} attempts"

    def unexpected(self, response, resource):
        """The ProviderError for a success that is not Graph's JSON (a proxy's HTML page, say)."""
        kind = (response.headers.get("content-type") or "no content type").split(";")[0]
        body = "a JSON " + type(response.data).__name__ if response.data is not None else f"a body that is not JSON ({kind})"
        return ProviderError("graph", resource, f"unexpected answer from {self.base_url}: {response.status} with {body}; is a proxy in the way?")

    def error(self, response, resource, permission):
        """The ProviderError for a final failed answer: one line, naming what to fix."""
        code = response.code or str(response.status)
        if response.status == 401:
            hint = f"; check {self.auth_hint}" if self.auth_hint else ""
            return ProviderError("graph", resource, f"Microsoft Graph rejected the credentials (401 {code}: {response.message}){hint}")
        if response.status == 403:
            return ProviderError(
                "graph",
                resource,
                f"permission denied (403 {code}): the app needs the Microsoft Graph permission {permission}, granted with admin consent",
            )
        if response.status == 429:
            return ProviderError("graph", resource, self.exhausted(response))
        if response.status is None:
            return ProviderError("graph", resource, f"the connection to {self.base_url} was lost ({response.detail})")
        return ProviderError("graph", resource, f"{response.status} {code}: {response.message}".rstrip(": "))

    # ------------------------------------------------------------------ batches

    async def run(self, items, resource="$batch", progress=None):
        """Send ``items`` in ``$batch``es of 20, ``concurrency`` at a time, until each has a final answer.

        Returns one :class:`Response` or :class:`GaveUp` per item, in order. Throttled
        items are sent again after the Retry-After; reads that failed are sent again;
        writes with an unknown outcome are re-read, then sent again only if not made.
        ``progress(done, total)`` is called about once a second while items get answers.
        """
        if not items:
            return []
        reported = [asyncio.get_running_loop().time()]

        def report(final=False):
            now = asyncio.get_running_loop().time()
            if progress is not None and (final or now - reported[0] >= PROGRESS_SECONDS):
                reported[0] = now
                progress(sum(1 for r in results if r is not None), len(items))

        results = [None] * len(items)
        attempts = Counter()
        unsure = set()  # writes sent at least once with an unknown outcome
        queue = asyncio.Queue()
        for index in range(len(items)):
            queue.put_nowait(index)

        def again(retry, index, response):
            """Note ``index`` for sending again (in ``retry``: index, backoff), or give it up."""
            # A 429 is Graph pacing us, not failing: it gets a budget four times as long.
            attempts[index] += 1 if response.status != 429 else 0.25
            if attempts[index] >= self.max_attempts:
                results[index] = GaveUp(self.exhausted(response))
                return
            self.stats["retries"] += 1
            # A 429's wait is everybody's (see throttled); other failures back off here.
            retry.append((index, self._backoff(attempts[index], response) if response.status != 429 else 0.0))

        async def requeue(retry):
            # One wait for the whole chunk (its longest backoff), then its items go back
            # together: a failed batch of 20 costs one backoff and one batch, not 20 of each.
            if not retry:
                return
            delay = max(wait for _, wait in retry)
            if delay > 0:
                self.stats["backoffs"] += 1
                await asyncio.sleep(delay)
            for index, _ in retry:
                queue.put_nowait(index)

        async def worker():
            while True:
                chunk = [await queue.get()]
                while len(chunk) < self._batch_size and not queue.empty():
                    chunk.append(queue.get_nowait())
                try:
                    pacer = self.pacers["write" if any(items[i].write for i in chunk) else "read"]
                    answers = await self._send_batch([items[i] for i in chunk], resource, pacer)
                    now = asyncio.get_running_loop().time()
                    throttled_here = sum(1 for a in answers if a.status == 429)
                    pausing = throttled_here and self._resume_at <= now  # the first 429 of a pause
                    pacer.accepted(now, len(answers) - throttled_here)
                    # Additive increase, multiplicative decrease: throttled batches shrink the
                    # next ones, so a tight limit is not met with 80 items at a time.
                    if throttled_here:
                        self._batch_size = max(1, self._batch_size // 2)
                    else:
                        self._batch_size = min(MAX_BATCH, self._batch_size + 1)
                    unknown, retry = [], []
                    for index, response in zip(chunk, answers):
                        uncertain = response.status is None or response.status in UNKNOWN_OUTCOME
                        if uncertain and not response.unsent and items[index].write and items[index].reread:
                            unsure.add(index)
                            unknown.append((index, response))
                        elif response.status == 429:
                            if self.throttled(response) is None:
                                results[index] = GaveUp(self.too_long(response))
                            else:
                                again(retry, index, response)
                        elif uncertain:
                            again(retry, index, response)
                        elif index in unsure and not response.ok and items[index].already and items[index].already(response):
                            # Sent again, refused as "already so": the earlier send was made.
                            self.stats["already"] += 1
                            results[index] = Response(200, {}, None, detail=f"already made (sent again: {response.describe()})")
                        else:
                            results[index] = response
                    if pausing:
                        pacer.throttled(now, max(self._resume_at - now, 0.0))
                    if unknown:
                        await self._settle(items, unknown, results, lambda i, r: again(retry, i, r), resource)
                    await requeue(retry)
                finally:
                    for _ in chunk:
                        queue.task_done()
                    report()

        workers = [asyncio.create_task(worker()) for _ in range(min(self.concurrency, len(items)))]
        joined = asyncio.create_task(queue.join())
        try:
            await asyncio.wait([joined, *workers], return_when=asyncio.FIRST_COMPLETED)
            for task in workers:
                # A worker only ends by raising; its last chunk's task_done may have let the
                # join finish at the same time, so look at every worker, not only at what woke us.
                if task.done():
                    task.result()
        finally:
            for task in [joined, *workers]:
                task.cancel()
            await asyncio.gather(joined, *workers, return_exceptions=True)
        report(final=True)
        return results

    async def _settle(self, items, unknown, results, again, resource):
        """Writes whose outcome is unknown: re-read, then done, again, or a reason."""
        # Replicas lag: a read at once may not see a write just made. So wait, read, and
        # send again only when a second read, as far apart, still does not see it.
        pending = list(unknown)
        for round_ in (1, 2):
            await asyncio.sleep(self.reread_delay)
            self.stats["rereads"] += len(pending)
            reads = await self.run([Item("GET", items[i].reread) for i, _ in pending], resource)
            not_seen = []
            for (index, response), read in zip(pending, reads):
                if isinstance(read, GaveUp):
                    results[index] = GaveUp(f"the change may or may not have been made ({response.describe()}), and re-reading it failed: {read.reason}")
                    continue
                verdict = items[index].decide(read)
                if verdict == "done":
                    results[index] = Response(200, {}, None, detail="confirmed by re-reading")
                elif verdict == "again":
                    not_seen.append((index, response))
                else:
                    results[index] = GaveUp(verdict)
            pending = not_seen
            if not pending:
                return
        for index, response in pending:
            again(index, response)

    async def _send_batch(self, chunk, resource, pacer=None):
        """POST one ``$batch``; one Response per item, in order (status None: outcome unknown)."""
        requests = []
        for number, item in enumerate(chunk, 1):
            entry = {"id": str(number), "method": item.method, "url": item.url}
            if item.body is not None:
                entry["body"] = item.body
                entry["headers"] = {"Content-Type": "application/json"}
            requests.append(entry)
        info = self.request_info("POST", "/$batch", {"requests": requests})
        response = await self.exchange(info, items=len(chunk), pacer=pacer)
        if response.status is None or response.status in UNKNOWN_OUTCOME:
            return [response] * len(chunk)
        if response.status == 429:
            return [response] * len(chunk)
        if not response.ok:
            raise self.error(response, resource, "")
        # Parse the responses ourselves: the SDK drops JSON-object bodies (kiota-python #737).
        entries = response.data.get("responses") if isinstance(response.data, dict) else None
        if not isinstance(entries, list) or not all(isinstance(e, dict) and isinstance(e.get("headers") or {}, dict) for e in entries):
            raise self.unexpected(response, resource)
        by_id = {}
        for entry in entries:
            headers = {k.lower(): v for k, v in (entry.get("headers") or {}).items()}
            status = entry.get("status")
            by_id[str(entry.get("id"))] = Response(status if isinstance(status, int) else None, headers, entry.get("body"), date=response.date)
        answers = []
        for number in range(1, len(chunk) + 1):
            answers.append(by_id.get(str(number)) or Response(None, detail="missing from the batch response"))
        return answers


def _retry_after(value, now):
    """Seconds from a Retry-After header (delta-seconds, fractional accepted, or an HTTP date)."""
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if now is None:
        return None
    return max((moment - now).total_seconds(), 0.0)
