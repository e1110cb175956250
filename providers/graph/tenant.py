"""The Microsoft 365 tenant through Microsoft Graph: :class:`GraphTenant`.

What it reads (domain-facts B):

* users in the selection: ``GET /users`` with ``$select`` of the fields used,
  ``$filter=onPremisesSyncEnabled eq true`` and ``$top=999`` when the selection
  names OUs (only synced users have an on-premises DN); users the selection names
  by UPN and the listing did not bring are read one by one, in ``$batch``es;
* SKUs from ``GET /subscribedSkus``, those that apply to users (a SKU "includes
  Exchange" when one of its service plans is an Exchange Online mailbox plan,
  whose ids it keeps); each licence's ``disabledPlans``;
* mailboxes of licensed users in the selection, by ``mailboxSettings`` probes in
  ``$batch``es: 404 ``MailboxNotEnabledForRESTAPI`` (or ``ResourceNotFound``,
  ``ErrorItemNotFound``, which Graph also answers for an existing user without a
  mailbox) is ABSENT, or PENDING while a
  licence with Exchange is younger than ``mailbox_pending_minutes`` by the
  server's clock (its Date header); a read that failed is UNKNOWN, never ABSENT;
* deleted users from ``/directory/deletedItems/microsoft.graph.user``.

* licensing groups the desired state names (``GET /groups`` by displayName, or by id),
  with ``assignedLicenses`` and their members (``GET /groups/{id}/members``, ids only).

What it changes: licences (``assignLicense``, one SKU added or removed per call), group
membership (``POST /groups/{id}/members/$ref``, read back from the user's ``memberOf``),
group licences reprocessed (``POST /users/{id}/reprocessLicenseAssignment``) and
permanent deletion of deleted users, all in ``$batch``es; see
:mod:`providers.graph.transport` for retries and unknown outcomes.

The core is synchronous: the public methods run coroutines on a private event
loop in a thread of its own, so they work whether or not the caller has a loop.
msgraph, kiota and azure-identity are imported on the first request only.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib
import logging
import threading
import warnings

from attrs import evolve

from reconciler.errors import ProviderError
from reconciler.interrupts import wait_for
from reconciler.model import CloudUser, DeletedUser, LicenseAssignment, LicensingGroup, MailboxState, Sku, TenantState
from reconciler.operations import (
    TENANT_OPERATIONS,
    AddGroupMembers,
    AssignLicense,
    Outcome,
    PurgeDeletedUsers,
    RemoveLicense,
    ReprocessLicences,
    VerifyMailboxes,
)
from reconciler.progress import Progress, rate_estimate
from reconciler.provider import TenantProvider
from providers.graph.connection import build_auth_provider, check_credentials_configured, resolve_endpoint

log = logging.getLogger("syncprep.graph")

USER_FIELDS = (
    "id",
    "userPrincipalName",
    "onPremisesSyncEnabled",
    "onPremisesDistinguishedName",
    "onPremisesImmutableId",
    "usageLocation",
    "assignedLicenses",
    "licenseAssignmentStates",
)
SKU_FIELDS = ("skuId", "skuPartNumber", "prepaidUnits", "consumedUnits", "servicePlans", "appliesTo")
DELETED_FIELDS = (
    "id",
    "userPrincipalName",
    "deletedDateTime",
    "onPremisesSyncEnabled",
    "onPremisesDistinguishedName",
    # A purged user comes back as a new object: the plan needs its usage location and
    # how it was licensed to license it again exactly so.
    "usageLocation",
    "assignedLicenses",
    "licenseAssignmentStates",
    # Every service plan ever assigned, a removed one as "Deleted": an Exchange plan there
    # means a mailbox may still exist (it outlives its licence by 30 days), which is the
    # only evidence Graph gives about a deleted user's mailbox.
    "assignedPlans",
)
# Service plans that give a user an Exchange Online mailbox. EXCHANGE_S_FOUNDATION,
# which comes with many non-mail SKUs, does not.
EXCHANGE_MAILBOX_PLANS = ("EXCHANGE_S_",)
NOT_A_MAILBOX_PLAN = frozenset({"EXCHANGE_S_FOUNDATION"})
#: EXCHANGE_S_FOUNDATION's servicePlanId (assignedPlans name plans by id only).
NOT_A_MAILBOX_PLAN_IDS = frozenset({"113feb6c-3fe4-4440-bddc-54d774bf0318"})
# assignLicense's refusal to remove a licence the user does not have (domain-facts B8).
#: A mailboxSettings probe's 404 codes that mean "this user has no mailbox" (not unknown):
#: Graph answers ResourceNotFound ("Resource could not be discovered.") or ErrorItemNotFound
#: for some users without one, MailboxNotEnabledForRESTAPI for others. A missing *user* is
#: Request_ResourceNotFound, which is not in this set.
NO_MAILBOX_CODES = frozenset({"MailboxNotEnabledForRESTAPI", "ResourceNotFound", "ErrorItemNotFound"})
NO_SUCH_LICENCE = "User does not have a corresponding license."

PERMISSIONS = {
    "users": "User.Read.All",
    "skus": "LicenseAssignment.Read.All (or Organization.Read.All)",
    "mailboxes": "MailboxSettings.Read",
    "licences": "LicenseAssignment.ReadWrite.All",
    "deleted": "User.Read.All",
    "purge": "User.DeleteRestore.All",
    "groups": "GroupMember.Read.All",
    "members": "GroupMember.ReadWrite.All",
    "reprocess": "User.ReadWrite.All",
}
#: Graph's refusal to add a member twice (a member added already, when sent again).
ALREADY_MEMBER = "One or more added object references already exist for the following modified properties: 'members'."

AUTH_HINTS = {
    "environment": "AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET or AZURE_CLIENT_CERTIFICATE_PATH",
    "workload-identity": "AZURE_TENANT_ID, AZURE_CLIENT_ID and the app's federated credential (issuer, subject, audience api://AzureADTokenExchange)",
    "azure-cli": "the account `az login` signed in with (az account show)",
    "managed-identity": "the managed identity and its Graph app roles",
    "device-code": "the account used for the device-code sign-in",
}


def open_tenant(spec, ca_bundle=None, **tuning):
    """A :class:`GraphTenant` for a :class:`~reconciler.desired.GraphTargetSpec`.

    Checks the endpoint and that credentials are configured; signs in on the first
    request. ``tuning`` passes on to :class:`GraphTenant` (tests and benchmarks).
    """
    endpoint = resolve_endpoint(spec)
    check_credentials_configured(spec)
    hint = AUTH_HINTS.get(spec.auth) or f"the token in the environment variable {spec.token_env}"
    return GraphTenant(
        endpoint.base_url,
        lambda: build_auth_provider(spec, endpoint, ca_bundle=ca_bundle),
        auth_hint=hint,
        mailbox_pending_minutes=spec.mailbox_pending_minutes,
        **({"ca_bundle": ca_bundle} if ca_bundle else {}),
        **tuning,
    )


class GraphTenant(TenantProvider):
    """A Microsoft 365 tenant reached through msgraph-sdk.

    ``make_auth`` builds the kiota authentication provider (called once, on the
    first request). ``poll_interval``/``verify_timeout`` (seconds) bound how
    VerifyMailboxes waits; the timeout defaults to ``mailbox_pending_minutes``.
    The other keywords tune :class:`~providers.graph.transport.GraphTransport`.
    """

    SUPPORTS = TENANT_OPERATIONS

    def __init__(
        self,
        base_url,
        make_auth,
        *,
        auth_hint="",
        mailbox_pending_minutes=60,
        poll_interval=60.0,
        verify_timeout=None,
        concurrency=4,
        max_attempts=8,
        backoff=1.0,
        max_retry_after=300.0,
        timeout=100.0,
        reread_delay=2.0,
        ca_bundle=None,
    ):
        self.base_url = base_url
        self._make_auth = make_auth
        self._auth_hint = auth_hint
        self.mailbox_pending_minutes = mailbox_pending_minutes
        self.poll_interval = poll_interval
        self.verify_timeout = verify_timeout if verify_timeout is not None else mailbox_pending_minutes * 60.0
        self._tuning = dict(concurrency=concurrency, max_attempts=max_attempts, backoff=backoff, max_retry_after=max_retry_after, timeout=timeout, reread_delay=reread_delay, ca_bundle=ca_bundle)
        self._transport = None
        self._loop = None
        self._thread = None
        self._exchange_skus = None
        self._closed_stats = {}

    def describe(self):
        return f"Microsoft Graph at {self.base_url}"

    @property
    def stats(self):
        """Requests sent so far (see GraphTransport.stats); empty before the first."""
        return self._transport.stats if self._transport is not None else self._closed_stats

    # ------------------------------------------------------------------ the private loop

    def _run(self, coro):
        import asyncio  # here, not at the top: it costs ~0.1 s to import, and only Graph runs need it

        if self._loop is None:
            self._loop = asyncio.new_event_loop()
            self._thread = threading.Thread(target=self._loop.run_forever, name="syncprep-graph", daemon=True)
            self._thread.start()
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            # In slices: a wait without a timeout cannot be interrupted by Ctrl-C on Windows.
            return wait_for(future)
        except BaseException:
            future.cancel()
            raise

    async def _client(self):
        if self._transport is None:
            from providers.graph.transport import GraphTransport

            self._transport = GraphTransport(self.base_url, self._make_auth(), auth_hint=self._auth_hint, **self._tuning)
        return self._transport

    def close(self):
        """Close connections and stop the private loop. The provider can be used again afterwards."""
        if self._loop is None:
            return
        if self._transport is not None:
            self._run(self._transport.aclose())
            self._closed_stats = self._transport.stats
            self._transport = None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()
        self._loop = self._thread = None

    # ------------------------------------------------------------------ observe

    def observe(self, selection):
        return self._run(self._observe(selection))

    async def _observe(self, selection):
        try:
            return await self._observe_all(selection)
        except ProviderError:
            raise
        except ExceptionGroup as group:
            # One line for the user: the first failure (the others are usually the same one).
            raise _one_line(group.exceptions[0], "observe") from None
        except Exception as exc:
            raise _one_line(exc, "observe") from None

    async def _observe_all(self, selection):
        import asyncio

        t = await self._client()
        async with asyncio.TaskGroup() as group:
            skus_task = group.create_task(self._skus(t))
            users_task = group.create_task(self._users(t, selection))
            deleted_task = group.create_task(self._deleted(t))
            groups_task = group.create_task(self._groups(t, selection.groups))
        skus, (users, states), deleted = skus_task.result(), users_task.result(), deleted_task.result()
        licensed = [u for u in users if u.licenses]
        mailboxes = await self._mailboxes(t, [u.id for u in licensed], {u.id: states[u.id] for u in licensed})
        users = tuple(evolve(u, mailbox=mailboxes[u.id]) if u.id in mailboxes else u for u in users)
        log.info(
            "observe: provider=graph users=%d skus=%d deleted=%s mailbox_probes=%d", len(users), len(skus), "unknown" if deleted is None else len(deleted), len(licensed)
        )
        return TenantState(users=users, skus=skus, deleted_users=deleted, groups=groups_task.result())

    async def _groups(self, t, keys):
        """The licensing groups named (display name or object id), each with its members' ids."""
        from urllib.parse import quote

        from providers.graph.transport import GaveUp, Item

        found = []
        for key in keys:
            select = "$select=id,displayName,assignedLicenses"
            name = key.replace("'", "''")
            url = f"/groups?$filter={quote(f'displayName eq {chr(39)}{name}{chr(39)}')}&{select}"
            (answer,) = await t.run([Item("GET", url)], f"group {key}")
            if isinstance(answer, GaveUp):
                raise ProviderError("graph", f"group {key}", answer.reason)
            if not answer.ok:
                raise t.error(answer, f"group {key}", PERMISSIONS["groups"])
            value = (answer.data or {}).get("value") or []
            if not value and _looks_like_id(key):
                (answer,) = await t.run([Item("GET", f"/groups/{key}?{select}")], f"group {key}")
                value = [answer.data] if not isinstance(answer, GaveUp) and answer.ok else []
            if len(value) > 1:
                raise ProviderError("graph", f"group {key}", f"{len(value)} groups are named {key!r}; name the group by its object id")
            if not value:
                continue  # not in the tenant: the planner says so
            raw = value[0]
            members = set()
            info = lambda gid=raw["id"]: t.request_info("GET", f"/groups/{gid}/members?$select=id&$top=999")  # noqa: E731
            async for page in t.pages(info, f"members of group {key}", PERMISSIONS["groups"]):
                members.update(m.get("id") for m in page if m.get("id"))
            licences = tuple((a["skuId"], tuple(a.get("disabledPlans") or ())) for a in raw.get("assignedLicenses") or [] if a.get("skuId"))
            found.append(LicensingGroup(raw["id"], raw.get("displayName") or key, licences, frozenset(members)))
        return tuple(found)

    async def _skus(self, t):
        from kiota_abstractions.base_request_configuration import RequestConfiguration

        SubscribedSkusRequestBuilder = _sdk("msgraph.generated.subscribed_skus.subscribed_skus_request_builder", "SubscribedSkusRequestBuilder")
        query = SubscribedSkusRequestBuilder.SubscribedSkusRequestBuilderGetQueryParameters(select=list(SKU_FIELDS))
        config = RequestConfiguration(query_parameters=query)
        skus = []
        async for page in t.pages(lambda: t.client.subscribed_skus.to_get_request_information(config), "subscribedSkus", PERMISSIONS["skus"]):
            for raw in page:
                if raw.get("appliesTo", "User") != "User":
                    continue  # only User SKUs can be assigned to users (domain-facts B2)
                exchange_ids = tuple(
                    p.get("servicePlanId") or ""
                    for p in raw.get("servicePlans") or []
                    if _is_mailbox_plan(p.get("servicePlanName") or "")
                )
                skus.append(
                    Sku(
                        sku_id=raw["skuId"],
                        part_number=raw.get("skuPartNumber") or raw["skuId"],
                        prepaid=int((raw.get("prepaidUnits") or {}).get("enabled") or 0),
                        consumed=int(raw.get("consumedUnits") or 0),
                        includes_exchange=bool(exchange_ids),
                        exchange_plan_ids=tuple(i for i in exchange_ids if i),
                    )
                )
        self._exchange_skus = {s.sku_id for s in skus if s.includes_exchange}
        return tuple(skus)

    async def _users(self, t, selection):
        """Users in the selection, and each one's licenseAssignmentStates (by id)."""
        from kiota_abstractions.base_request_configuration import RequestConfiguration

        from providers.graph.transport import GaveUp, Item, user_path

        UsersRequestBuilder = _sdk("msgraph.generated.users.users_request_builder", "UsersRequestBuilder")

        users, states, seen = [], {}, set()

        def take(raw):
            user = _cloud_user(raw)
            if selection.matches(user) and user.upn.lower() not in seen:
                seen.add(user.upn.lower())
                users.append(user)
                states[user.id] = raw.get("licenseAssignmentStates") or []

        if selection.ous:
            query = UsersRequestBuilder.UsersRequestBuilderGetQueryParameters(
                select=list(USER_FIELDS), filter="onPremisesSyncEnabled eq true", top=999
            )
            config = RequestConfiguration(query_parameters=query)
            async for page in t.pages(lambda: t.client.users.to_get_request_information(config), "users", PERMISSIONS["users"]):
                for raw in page:
                    take(raw)
        missing = sorted(selection.upns - seen)
        if missing:
            select = ",".join(USER_FIELDS)
            answers = await t.run([Item("GET", f"/users/{user_path(upn)}?$select={select}") for upn in missing], "users")
            for upn, answer in zip(missing, answers):
                if isinstance(answer, GaveUp):
                    raise ProviderError("graph", f"user {upn}", answer.reason)
                if answer.status == 404:
                    continue  # not in the tenant: the planner says so
                if not answer.ok:
                    raise t.error(answer, f"user {upn}", PERMISSIONS["users"])
                take(answer.data)
        return users, states

    async def _deleted(self, t):
        """The deleted users, or None when the recycle bin cannot be read: unknown, never
        empty. It blocks only the purge; a plan of Solution 1 does not need it."""
        try:
            return await self._read_deleted(t)
        except ProviderError as exc:
            if exc.resource == "sign-in" or any(marker in exc.message for marker in _WHOLE_ENDPOINT):
                raise  # not about the recycle bin: every other read fails the same way
            log.warning("observe: the recycle bin could not be read (unknown): %s", exc)
            return None

    async def _read_deleted(self, t):
        from kiota_abstractions.base_request_configuration import RequestConfiguration

        GraphUserRequestBuilder = _sdk(
            "msgraph.generated.directory.deleted_items.graph_user.graph_user_request_builder", "GraphUserRequestBuilder"
        )
        query = GraphUserRequestBuilder.GraphUserRequestBuilderGetQueryParameters(select=list(DELETED_FIELDS), top=999)
        config = RequestConfiguration(query_parameters=query)
        deleted = []

        def make():
            with _quiet():  # the builder chain imports generated modules as it goes
                return t.client.directory.deleted_items.graph_user.to_get_request_information(config)

        async for page in t.pages(make, "deleted users", PERMISSIONS["deleted"]):
            for raw in page:
                object_id = raw["id"]
                upn = raw.get("userPrincipalName") or ""
                # Graph prefixes a deleted user's UPN with its object id without dashes.
                prefix = object_id.replace("-", "")
                if upn.lower().startswith(prefix.lower()):
                    upn = upn[len(prefix) :]
                seen = _cloud_user(raw)
                deleted.append(
                    DeletedUser(
                        id=object_id,
                        upn=upn,
                        deleted_at=_iso(raw.get("deletedDateTime")),
                        synced=raw.get("onPremisesSyncEnabled"),
                        on_prem_dn=raw.get("onPremisesDistinguishedName"),
                        usage_location=seen.usage_location,
                        licenses=seen.licenses,
                        had_exchange_plan=_had_exchange_plan(raw.get("assignedPlans")),
                    )
                )
        return tuple(deleted)

    async def _mailboxes(self, t, ids, states=None, verifying=False):
        """{user id: MailboxState, or None for a user that does not exist} for ``ids``.

        ``states`` = {user id: licenseAssignmentStates} when already read (observe);
        without it each user's are read in the same ``$batch`` (VerifyMailboxes).
        """
        from providers.graph.transport import GaveUp, Item, user_path

        if self._exchange_skus is None:
            await self._skus(t)
        items = []
        for uid in ids:
            if states is None:
                items.append(Item("GET", f"/users/{user_path(uid)}?$select=id,licenseAssignmentStates"))
            items.append(Item("GET", f"/users/{user_path(uid)}/mailboxSettings"))
        answers = iter(await t.run(items, "mailboxSettings"))
        result = {}
        for uid in ids:
            user = next(answers) if states is None else None
            mailbox = next(answers)
            if user is not None and not isinstance(user, GaveUp) and user.status == 404:
                result[uid] = None
            elif isinstance(mailbox, GaveUp) or isinstance(user, GaveUp):
                result[uid] = MailboxState.UNKNOWN
            elif mailbox.ok:
                result[uid] = MailboxState.PRESENT
            elif mailbox.status in (401, 403):
                raise t.error(mailbox, "mailboxSettings", PERMISSIONS["mailboxes"])
            elif mailbox.status == 404 and mailbox.code in NO_MAILBOX_CODES and (user is None or user.ok):
                licences = states[uid] if states is not None else (user.data or {}).get("licenseAssignmentStates") or []
                # "Recently" by the server's clock when it answered this probe (not ours, not later).
                now = mailbox.date or t.server_now or dt.datetime.now(dt.timezone.utc)
                recent = self._recently_licensed(licences, self._exchange_skus, now)
                # While verifying, a user with no Exchange licence yet was just added to a
                # licensing group: Entra ID assigns group licences in the background.
                on_its_way = verifying and not any(s.get("skuId") in self._exchange_skus for s in licences)
                result[uid] = MailboxState.PENDING if recent or on_its_way else MailboxState.ABSENT
            else:
                result[uid] = MailboxState.UNKNOWN
        return result

    def _recently_licensed(self, states, exchange, now):
        window = dt.timedelta(minutes=self.mailbox_pending_minutes)
        for state in states:
            if state.get("skuId") in exchange and state.get("lastUpdatedDateTime"):
                when = _parse_time(state["lastUpdatedDateTime"])
                if when is not None and now - when < window:
                    return True
        return False

    # ------------------------------------------------------------------ apply

    def apply(self, operation):
        if type(operation) not in self.SUPPORTS:
            raise TypeError(f"unsupported operation {operation!r}")
        return self._run(self._apply(operation))

    async def _apply(self, operation):
        try:
            return await self._apply_one(operation)
        except ProviderError:
            raise
        except Exception as exc:
            raise _one_line(exc, type(operation).__name__) from None

    async def _apply_one(self, operation):
        t = await self._client()
        match operation:
            case AssignLicense(sku_id, part_number, users, disabled):
                return await self._licence(t, users, sku_id, part_number, add=True, disabled=dict(disabled))
            case RemoveLicense(sku_id, part_number, users):
                return await self._licence(t, users, sku_id, part_number, add=False)
            case AddGroupMembers(group_id, name, users):
                return await self._add_members(t, group_id, name, users)
            case ReprocessLicences(users):
                return await self._reprocess(t, users)
            case PurgeDeletedUsers(users):
                return await self._purge(t, users)
            case VerifyMailboxes(users):
                return await self._verify(t, users)
        raise TypeError(f"unsupported operation {operation!r}")

    async def _add_members(self, t, group_id, name, users):
        """Each user added to the group, seen done in the user's memberOf."""
        from providers.graph.transport import Item, user_path

        def decide(read):
            if read.status == 404:
                return read.message or "user not found"
            if not read.ok:
                return f"could not confirm the membership: re-reading the user's groups answered {read.describe()}"
            return "done" if any(g.get("id") == group_id for g in (read.data or {}).get("value") or []) else "again"

        items = [
            Item(
                "POST",
                f"/groups/{user_path(group_id)}/members/$ref",
                {"@odata.id": f"{t.base_url}/directoryObjects/{ref.id}"},
                reread=f"/users/{user_path(ref.id)}/memberOf?$select=id&$top=999",
                decide=decide,
                already=lambda answer: answer.status == 400 and answer.message == ALREADY_MEMBER,
            )
            for ref in users
        ]
        answers = await t.run(items, f"add members to group {name}")
        return self._outcome(t, users, answers, f"add members to group {name}", PERMISSIONS["members"])

    async def _reprocess(self, t, users):
        """Each user's group licences processed again. Repeating it is harmless, so an
        unknown outcome is sent again; the mailbox it is for is verified by the next step."""
        from providers.graph.transport import Item, user_path

        items = [
            Item(
                "POST",
                f"/users/{user_path(ref.id)}/reprocessLicenseAssignment",
                None,  # the action takes no request body
                reread=f"/users/{user_path(ref.id)}?$select=id",
                decide=lambda read: (read.message or "user not found") if read.status == 404 else "again",
            )
            for ref in users
        ]
        answers = await t.run(items, "reprocess group licences")
        return self._outcome(t, users, answers, "reprocess group licences", PERMISSIONS["reprocess"])

    async def _licence(self, t, users, sku_id, part_number, add, disabled=None):
        """Add or remove ``sku_id``; ``disabled`` = {lower-case UPN: plans to keep switched off}."""
        import asyncio

        from providers.graph.transport import Item, user_path

        def body(ref):
            # Graph wants both lists; a remove and an add are separate calls (domain-facts B1).
            if not add:
                return {"addLicenses": [], "removeLicenses": [sku_id]}
            # An add replaces the user's disabledPlans for the SKU: send the admin's choices again.
            plans = list((disabled or {}).get(ref.upn.lower(), ()))
            return {"addLicenses": [{"disabledPlans": plans, "skuId": sku_id}], "removeLicenses": []}

        def decide(read):
            if read.status == 404:
                return read.message or "user not found"
            if not read.ok:
                return f"could not confirm the change: re-reading the user answered {read.describe()}"
            has = any(a.get("skuId") == sku_id for a in (read.data or {}).get("assignedLicenses") or [])
            return "done" if has == add else "again"

        def already(answer):
            # Only a removal can meet "already so"; adding a licence the user has is no error.
            return not add and answer.status == 400 and answer.message == NO_SUCH_LICENCE

        items = [
            Item(
                "POST",
                f"/users/{user_path(ref.id)}/assignLicense",
                body(ref),
                reread=f"/users/{user_path(ref.id)}?$select=id,assignedLicenses",
                decide=decide,
                already=already,
            )
            for ref in users
        ]
        verb = "assign" if add else "remove"
        began = asyncio.get_running_loop().time()

        def progress(done, total):
            elapsed = asyncio.get_running_loop().time() - began
            self.on_progress(Progress(f"{part_number} licences {'assigned' if add else 'removed'}", elapsed, done, total, "licences", remaining=rate_estimate(elapsed, done, total)))

        answers = await t.run(items, f"{verb} licence {part_number}", progress=progress)
        return self._outcome(t, users, answers, f"{verb} licence {part_number}", PERMISSIONS["licences"])

    async def _purge(self, t, users):
        from providers.graph.transport import Item, user_path

        def decide(read):
            if read.status == 404:
                return "done"
            if read.ok:
                return "again"
            return f"could not confirm the deletion: re-reading answered {read.describe()}"

        items = [
            Item(
                "DELETE",
                f"/directory/deletedItems/{user_path(ref.id)}",
                reread=f"/directory/deletedItems/{user_path(ref.id)}?$select=id",
                decide=decide,
                already=lambda answer: answer.status == 404,  # sent again: gone means purged
            )
            for ref in users
        ]
        answers = await t.run(items, "purge deleted users")
        return self._outcome(t, users, answers, "purge deleted users", PERMISSIONS["purge"])

    @staticmethod
    def _outcome(t, users, answers, resource, permission):
        from providers.graph.transport import GaveUp

        failures = []
        for ref, answer in zip(users, answers):
            if isinstance(answer, GaveUp):
                failures.append((ref.upn, answer.reason))
            elif answer.ok:
                continue
            elif answer.status in (401, 403):
                done = sum(1 for a in answers if not isinstance(a, GaveUp) and a.ok)
                error = t.error(answer, resource, permission)
                raise ProviderError(error.provider, error.resource, f"{error.message} ({done} of {len(users)} done before this)")
            else:
                failures.append((ref.upn, answer.message or answer.describe()))
        return Outcome(f"{len(users) - len(failures)} of {len(users)} done", tuple(failures))

    async def _verify(self, t, users):
        import asyncio

        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.verify_timeout
        while True:
            found = await self._mailboxes(t, [ref.id for ref in users], verifying=True)
            states = {ref.upn: found[ref.id] for ref in users}
            waiting = [upn for upn, s in states.items() if s in (MailboxState.PENDING, MailboxState.UNKNOWN)]
            if not waiting or loop.time() >= deadline:
                break
            present = sum(1 for s in states.values() if s is MailboxState.PRESENT)
            elapsed = loop.time() + self.verify_timeout - deadline
            self.on_progress(Progress("mailboxes to appear", elapsed, present, len(users), "mailboxes", waiting_for=f"{len(waiting)} provisioning"))
            await asyncio.sleep(min(self.poll_interval, max(deadline - loop.time(), 0)))
        failures = tuple(
            (upn, f"no Exchange Online mailbox ({'missing user' if state is None else state.value})")
            for upn, state in states.items()
            if state is not MailboxState.PRESENT
        )
        return Outcome(f"{len(users) - len(failures)} of {len(users)} mailboxes present", failures)


#: Errors about the endpoint or the credentials, not the recycle bin (see GraphTransport).
_WHOLE_ENDPOINT = ("unexpected answer from", "rejected the credentials")


def _looks_like_id(key):
    import re

    return re.fullmatch(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}", key) is not None


def _cloud_user(raw):
    states = raw.get("licenseAssignmentStates") or []
    # A licence that comes from a group cannot be removed for one user (domain-facts B2).
    by_group = {s.get("skuId") for s in states if s.get("assignedByGroup")}
    # When the SKU first reached the user (a direct and a group assignment may both exist).
    assigned_at = {}
    for state in states:
        when = _iso(state.get("lastUpdatedDateTime")) or None
        sku = state.get("skuId")
        if when and (sku not in assigned_at or when < assigned_at[sku]):
            assigned_at[sku] = when
    licenses = tuple(
        LicenseAssignment(
            a["skuId"],
            a["skuId"] in by_group,
            assigned_at.get(a["skuId"]),
            disabled_plans=tuple(sorted(p for p in a.get("disabledPlans") or () if p)),
        )
        for a in raw.get("assignedLicenses") or []
    )
    return CloudUser(
        id=raw["id"],
        upn=raw.get("userPrincipalName") or "",
        synced=raw.get("onPremisesSyncEnabled"),
        on_prem_dn=raw.get("onPremisesDistinguishedName"),
        usage_location=raw.get("usageLocation"),
        licenses=licenses,
    )


@contextlib.contextmanager
def _quiet():
    """msgraph's generated builders warn about their own deprecated classes when imported."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


def _sdk(module, name):
    """``name`` from an msgraph module, imported on first use (domain-facts E2), quietly."""
    with _quiet():
        return getattr(importlib.import_module(module), name)


def _one_line(exc, resource):
    """``exc`` as a ProviderError: a ProviderError as is, anything else (a field missing
    from an answer, an answer of the wrong shape) as "unexpected answer", naming its type."""
    if isinstance(exc, ProviderError):
        return exc
    first = (str(exc).strip().splitlines() or [""])[0][:200]
    detail = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    log.debug("unexpected answer: resource=%s", resource, exc_info=exc)
    return ProviderError("graph", resource, f"unexpected answer from Microsoft Graph ({detail})")


def _had_exchange_plan(plans):
    """Whether assignedPlans hold an Exchange plan (enabled or removed) that may have given a mailbox.

    assignedPlans name a plan by id and service only: every "exchange" plan but
    EXCHANGE_S_FOUNDATION counts (an archive or a plan of a SKU no longer subscribed may
    stand for a mailbox too: in doubt, it does).
    """
    for plan in plans or []:
        if not isinstance(plan, dict):
            continue
        if (plan.get("service") or "").lower() != "exchange":
            continue
        if (plan.get("servicePlanId") or "").lower() in NOT_A_MAILBOX_PLAN_IDS:
            continue
        # Enabled, Warning, Suspended, LockedOut or Deleted: each was assigned at some point.
        return True
    return False


def _is_mailbox_plan(name):
    """An Exchange Online plan that gives a mailbox: EXCHANGE_S_* but not EXCHANGE_S_FOUNDATION."""
    return name.startswith(EXCHANGE_MAILBOX_PLANS) and name not in NOT_A_MAILBOX_PLAN


def _parse_time(text):
    try:
        moment = dt.datetime.fromisoformat(text[:19])
    except (TypeError, ValueError):
        return None
    return moment.replace(tzinfo=dt.timezone.utc)


def _iso(text):
    moment = _parse_time(text) if text else None
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment else (text or "")
