"""Lab scenarios: the worlds ``syncprep lab init`` creates.

The default scenario is the knowledge-base article's starting point: an OU of
synced users with on-premises mailboxes whose ``msExchMailboxGuid`` has reached
the cloud, some of them already licensed without a mailbox, an inetOrgPerson user,
a user without a usage location, a SKU with too few units, and stock rule
precedences (200 among them) taken.

``group-licensed`` is the same world licensed the way many tenants do it: a cloud
security group, ``Licensing-E3``, assigns ENTERPRISEPACK to its members, and the first
three joined it before the GUID was cleared (a group licence, no mailbox). The tenant
also has a mailbox-only SKU, EXCHANGESTANDARD, with three units, for mixed-SKU plans.

``two-forest`` adds a second AD forest with its own connector; ``resource-forest`` makes that
forest the resource forest of three of the first forest's users (see :data:`RESOURCE_OU`).
"""

from __future__ import annotations

from reconciler.model import (
    GUID_ATTRIBUTE,
    AttributeFlow,
    Connector,
    Direction,
    FlowType,
    LinkType,
    MergeType,
    ScopeCondition,
    SyncPolicy,
    SyncRule,
)
from reconciler import dn
from providers.lab.world import AdObject, AdUser, GroupLicense, Lab, LabCloudUser, LabGroup, LabSku, Server, lab_guid

HYBRID_OU = "OU=HybridUsers,OU=Corp,DC=contoso,DC=com"
SERVICE_OU = "OU=ServiceAccounts,OU=Corp,DC=contoso,DC=com"
ENTERPRISEPACK_ID = "6fd2c87f-b296-42f0-b197-1e91e994b900"  # Office 365 E3's real skuId
EMS_ID = "efccb6f7-5641-4e0e-bd10-b4976e1bf68e"
AD_CONNECTOR = lab_guid("connector", "contoso.com")
AAD_CONNECTOR = lab_guid("connector", "contoso.onmicrosoft.com - AAD")
# The second forest of the two-forest scenario: its own AD connector, named after its domain.
FABRIKAM = "fabrikam.com"
FABRIKAM_CONNECTOR = lab_guid("connector", FABRIKAM)
FABRIKAM_TOP = "OU=Fabrikam,DC=fabrikam,DC=com"
FABRIKAM_OU = "OU=Staff,OU=Fabrikam,DC=fabrikam,DC=com"
#: Where the second forest's stock rules start: each AD connector has its own copy of the
#: "In from AD" rules, same names, other precedences (domain-facts A2).
FABRIKAM_PRECEDENCE = 120
FABRIKAM_USERS = 3

#: ``resource-forest``: two-forest, where fabrikam.com is also the resource forest of three
#: contoso.com users (an account/resource topology, common in hybrid Exchange): their
#: accounts in contoso carry no Exchange attributes, their linked mailboxes are disabled users
#: in this OU of fabrikam, joined to the accounts' metaverse persons (msExchMasterAccountSid).
RESOURCE_OU = "OU=Resources,OU=Fabrikam,DC=fabrikam,DC=com"
#: The accounts are picked by position (the 4th to 6th contoso user): sams are zero-padded to the
#: width of ``users`` ("user004" from 100 users on), so a name would match nothing in a big lab.
LINKED_POSITIONS = slice(3, 6)


def sam_width(users):
    """The digits of the users' sams in a lab of ``users`` users: "user04" below 100, "user004" from 100 on."""
    return max(2, len(str(users)))


def linked_users(users=20):
    """The sams of the accounts whose mailboxes are linked, in a ``resource-forest`` lab of ``users`` users."""
    return tuple(f"user{i + 1:0{sam_width(users)}d}" for i in range(LINKED_POSITIONS.start, LINKED_POSITIONS.stop))


#: Their sams in a lab of fewer than 100 users (the tests' sizes); at any size: linked_users(users).
LINKED_USERS = linked_users(20)

SCENARIOS = ("default", "already-prepared", "empty-tenant", "duplicate-upn-in-bin", "escaped-comma-dn", "half-done", "group-licensed", "two-forest", "resource-forest")
EXCHANGESTANDARD_ID = "4b9405b0-7788-4568-add1-99614e613b69"  # Exchange Online (Plan 1)'s real skuId
LICENSING_GROUP = "Licensing-E3"

# The Exchange attributes the stock "In from AD - ... Exchange" rules flow as they are.
EXCHANGE_ATTRIBUTES = (
    "msExchArchiveGUID", "msExchArchiveName", "msExchAssistantName", "msExchAuditAdmin", "msExchAuditDelegate",
    "msExchAuditDelegateAdmin", "msExchAuditOwner", "msExchBlockedSendersHash", "msExchBypassAudit",
    "msExchELCExpirySuspensionEnd", "msExchELCExpirySuspensionStart", "msExchELCMailboxFlags", "msExchEnableModeration",
    "msExchExtensionCustomAttribute1", "msExchExtensionCustomAttribute2", "msExchExtensionCustomAttribute3",
    "msExchExtensionCustomAttribute4", "msExchExtensionCustomAttribute5", "msExchHideFromAddressLists", "msExchImmutableId",
    "msExchLitigationHoldDate", "msExchLitigationHoldOwner", "msExchMailboxAuditEnable", "msExchMailboxAuditLogAgeLimit",
    "msExchModerationFlags", "msExchRecipientDisplayType", "msExchRecipientTypeDetails", "msExchRemoteRecipientType",
    "msExchRequireAuthToSendTo", "msExchResourceCapacity", "msExchResourceDisplay", "msExchResourceMetaData",
    "msExchResourceSearchProperties", "msExchRetentionComment", "msExchRetentionURL", "msExchSafeRecipientsHash",
    "msExchSafeSendersHash", "msExchSenderHintTranslations", "msExchTeamMailboxExpiration", "msExchTeamMailboxOwners",
    "msExchTeamMailboxSharePointUrl", "msExchUserHoldPolicies",
)


def _direct(source, destination):
    return AttributeFlow(destination=destination, flow_type=FlowType.DIRECT, source=source)


def _stock(precedence, name, direction, source_type, target_type, link=LinkType.JOIN, flows=(), scope=()):
    connector = AD_CONNECTOR if direction is Direction.INBOUND and "from AD" in name else AAD_CONNECTOR
    tag = "Microsoft." + "".join(ch for ch in name if ch.isalnum()) + ".004"
    return SyncRule(
        identifier=lab_guid("stock", name),
        name=name,
        direction=direction,
        precedence=precedence,
        connector=connector,
        source_object_type=source_type,
        target_object_type=target_type,
        link_type=link,
        flows=tuple(flows),
        scope=tuple(scope),
        is_standard=True,
        immutable_tag=tag,
    )


def stock_rules():
    """The out-of-box rules of the lab's Entra Connect build.

    The lab simulates only the flows of the attributes it exports (see
    ``EXPORTED_ATTRIBUTES``); the other rules hold their precedences, as on a real
    server, so the planner must step around them.
    """
    inbound, outbound = Direction.INBOUND, Direction.OUTBOUND
    exchange_scope = ((ScopeCondition("mailNickname", "ISNOTNULL"),),)

    def join_flows():
        # A Constant flow, as the editor writes it: the constant is the flow's source.
        return (
            _direct("objectGUID", "sourceAnchor"),
            _direct("userPrincipalName", "userPrincipalName"),
            AttributeFlow("sourceObjectType", FlowType.CONSTANT, expression="User"),
        )

    def exchange_flows():
        # The stock rule flows the GUID and msExchUsageLocation -> usageLocation (domain-facts A2),
        # and dozens of other Exchange attributes, as a real server's does, including
        # the awkward kinds: an Expression reading several sources, a merge that is not
        # Update. Lab assumption: the exact list varies by build; these are the names the
        # real rule flows, and the lab evaluates only the attributes it exports.
        same = [_direct(a, a) for a in EXCHANGE_ATTRIBUTES]
        proxy = AttributeFlow(
            "proxyAddresses",
            FlowType.EXPRESSION,
            source="proxyAddresses",
            other_sources=("mail",),
            expression='IIF(IsPresent([proxyAddresses]),RemoveDuplicates(Trim(ImportedValue("proxyAddresses"))),IIF(IsPresent([mail]),"SMTP:"&[mail],NULL))',
            merge_type=MergeType.MERGE_CASE_INSENSITIVE,
        )
        return (
            _direct(GUID_ATTRIBUTE, GUID_ATTRIBUTE),
            _direct("msExchUsageLocation", "usageLocation"),
            _direct("mailNickname", "mailNickname"),
            *same,
            proxy,
        )

    rules = [
        _stock(100, "In from AD - InetOrgPerson Join", inbound, "inetOrgPerson", "person", LinkType.PROVISION, join_flows()),
        _stock(101, "In from AD - User Join", inbound, "user", "person", LinkType.PROVISION, join_flows()),
        _stock(102, "In from AD - User AccountEnabled", inbound, "user", "person"),
        _stock(103, "In from AD - User Common", inbound, "user", "person", flows=(_direct("displayName", "displayName"),)),
        _stock(104, "In from AD - InetOrgPerson AccountEnabled", inbound, "inetOrgPerson", "person"),
        _stock(105, "In from AD - InetOrgPerson Common", inbound, "inetOrgPerson", "person", flows=(_direct("displayName", "displayName"),)),
        _stock(106, "In from AD - User Identifier", inbound, "user", "person"),
        _stock(107, "In from AD - InetOrgPerson Identifier", inbound, "inetOrgPerson", "person"),
        _stock(108, "In from AD - User Exchange", inbound, "user", "person", flows=exchange_flows(), scope=exchange_scope),
        _stock(109, "In from AD - InetOrgPerson Exchange", inbound, "inetOrgPerson", "person", flows=exchange_flows(), scope=exchange_scope),
        _stock(110, "In from AD - User Lync", inbound, "user", "person"),
        _stock(111, "In from AD - InetOrgPerson Lync", inbound, "inetOrgPerson", "person"),
        _stock(112, "In from AD - Group Join", inbound, "group", "group", LinkType.PROVISION),
        _stock(113, "In from AD - Group Common", inbound, "group", "group"),
        _stock(114, "In from AD - Group Exchange", inbound, "group", "group"),
        _stock(115, "In from AD - Contact Join", inbound, "contact", "person", LinkType.PROVISION),
        _stock(116, "In from AD - Contact Common", inbound, "contact", "person"),
        _stock(117, "In from AD - Contact Exchange", inbound, "contact", "person"),
        _stock(118, "In from AD - ForeignSecurityPrincipal Join (User)", inbound, "foreignSecurityPrincipal", "person"),
        _stock(119, "In from AD - Computer Join", inbound, "computer", "device", LinkType.PROVISION),
        # Inbound and outbound share one precedence space: 200 is taken here.
        _stock(200, "Out to AAD - User Join", outbound, "person", "user", LinkType.PROVISION),
        _stock(201, "Out to AAD - User Identity", outbound, "person", "user"),
        _stock(202, "Out to AAD - User ExchangeOnline", outbound, "person", "user"),
        _stock(203, "Out to AAD - Group Join", outbound, "group", "group", LinkType.PROVISION),
        _stock(204, "Out to AAD - Group Identity", outbound, "group", "group"),
        _stock(205, "Out to AAD - Contact Join", outbound, "person", "contact", LinkType.PROVISION),
        _stock(206, "Out to AAD - Contact Identity", outbound, "person", "contact"),
        _stock(207, "Out to AAD - Device Join SOAInAD", outbound, "device", "device", LinkType.PROVISION),
        _stock(208, "In from AAD - User Join", inbound, "user", "person"),
        _stock(209, "In from AAD - User Identity", inbound, "user", "person"),
        _stock(210, "In from AAD - Group Join", inbound, "group", "group"),
        _stock(211, "In from AAD - Contact Join", inbound, "contact", "person"),
    ]
    return rules


def second_forest_rules(rules, connector=FABRIKAM_CONNECTOR, domain=FABRIKAM, start=FABRIKAM_PRECEDENCE):
    """The second AD connector's own copies of the "In from AD" stock rules: same names and
    tags, their own identifiers and connector, precedences from ``start`` on."""
    from attrs import evolve

    inbound = sorted((r for r in rules if r.direction is Direction.INBOUND and r.connector == AD_CONNECTOR), key=lambda r: r.precedence)
    return [
        evolve(rule, identifier=lab_guid("stock", rule.name, domain), connector=connector, precedence=start + index)
        for index, rule in enumerate(inbound)
    ]


def _other_objects(ou, prefix, domain="contoso.com"):
    """A few groups, a contact and computers in a synced OU: what leaves the scope with its users."""
    objects = [("group", f"{prefix}-Staff"), ("group", f"{prefix}-Managers"), ("contact", f"{prefix}-Supplier"), ("computer", f"{prefix.upper()}-PC01"), ("computer", f"{prefix.upper()}-PC02")]
    return [AdObject(lab_guid("ad", domain, kind, name), name, f"CN={name},{ou}", kind) for kind, name in objects]


def _ad_user(index, width, ou, object_class="user", mailbox=True, usage_location="US", prefix="user", domain="contoso.com"):
    sam = f"{prefix}{index:0{width}d}"
    guid = lab_guid("ad", sam)
    return AdUser(
        object_guid=guid,
        sam=sam,
        upn=f"{sam}@{domain}",
        dn=f"CN={sam},{ou}",
        object_class=object_class,
        display_name=f"{prefix.capitalize()} {index:0{width}d}",
        mailbox_guid=lab_guid("mailbox", sam) if mailbox else None,
        mail_nickname=sam if mailbox else None,
        usage_location=usage_location,
    )


def build(scenario="default", users=20):
    """Create a lab world. ``users`` scales the number of mailbox users in the OU."""
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; choose one of {', '.join(SCENARIOS)}")
    if users < 4:
        raise ValueError("the default scenario needs at least 4 users")
    if scenario == "resource-forest" and users < LINKED_POSITIONS.stop:
        raise ValueError(f"the resource-forest scenario needs at least {LINKED_POSITIONS.stop} users")
    width = sam_width(users)
    rules = stock_rules()
    connectors = [
        Connector(AD_CONNECTOR, "contoso.com", "AD", included_containers=("OU=Corp,DC=contoso,DC=com",)),
        Connector(AAD_CONNECTOR, "contoso.onmicrosoft.com - AAD", "AAD"),
    ]
    if scenario in ("two-forest", "resource-forest"):
        rules += second_forest_rules(rules)
        connectors.insert(1, Connector(FABRIKAM_CONNECTOR, FABRIKAM, "AD", included_containers=(FABRIKAM_TOP,)))
    server = Server(rules=list(rules), stock_catalogue=list(rules), connectors=connectors)
    lab = Lab(server=server, scenario=scenario)

    ad_users = [_ad_user(i, width, HYBRID_OU) for i in range(1, users + 1)]
    accounts = ad_users[LINKED_POSITIONS]
    ad_users[6 if users > 6 else users - 1].usage_location = None  # user07 has no msExchUsageLocation
    ad_users.append(_ad_user(1, 2, HYBRID_OU, object_class="inetOrgPerson", prefix="contractor"))
    ad_users += [_ad_user(i, 2, SERVICE_OU, mailbox=False, prefix="svc") for i in (1, 2)]
    if scenario == "escaped-comma-dn":
        ad_users += _comma_names()
    lab.ad_objects = _other_objects(HYBRID_OU, "hybrid")
    units = users
    if scenario in ("two-forest", "resource-forest"):
        ad_users += [_ad_user(i, 2, FABRIKAM_OU, prefix="fab", domain=FABRIKAM) for i in range(1, FABRIKAM_USERS + 1)]
        lab.ad_objects += _other_objects(FABRIKAM_OU, "fab", FABRIKAM)
        units += FABRIKAM_USERS
    if scenario == "resource-forest":
        lab.ad_objects += _linked_mailboxes(accounts)
    lab.ad_users = ad_users

    # The tenant: one cloud-only admin with a mailbox, and a SKU one unit short.
    lab.skus = [LabSku(ENTERPRISEPACK_ID, "ENTERPRISEPACK", prepaid=units), LabSku(EMS_ID, "EMS", prepaid=units * 2, includes_exchange=False)]
    admin = LabCloudUser(id=lab_guid("cloud", "admin"), upn="admin@contoso.onmicrosoft.com", display_name="Admin", usage_location="US")
    lab.cloud_users.append(admin)
    lab.assign_license(admin.id, ENTERPRISEPACK_ID)

    if scenario == "empty-tenant":
        lab.server.next_scheduled_at = lab.clock + lab.server.sync_interval
        lab.advance(lab.provisioning_minutes)
        lab.server.connector_space.clear()
        return lab

    # The first sync ran with the stock rules: the GUIDs reached the cloud.
    lab.run_cycle(SyncPolicy.INITIAL)
    # Someone licensed the first three already; no mailbox came of it (and a user of the second forest).
    if scenario == "group-licensed":
        _licensing_group(lab, ad_users[:3])
    else:
        for ad in ad_users[:3] + [u for u in ad_users if u.upn == f"fab01@{FABRIKAM}"]:
            lab.assign_license(ad.upn, ENTERPRISEPACK_ID)
    lab.server.next_scheduled_at = lab.clock + lab.server.sync_interval
    lab.advance(lab.provisioning_minutes)
    if scenario == "already-prepared":
        _prepare(lab)
    elif scenario == "half-done":
        _half_done(lab, users)
    elif scenario == "duplicate-upn-in-bin":
        _old_object_in_bin(lab, ad_users[4 if users > 4 else 0])
    return lab


def _linked_mailboxes(accounts):
    """Each account's mailbox in the resource forest: a disabled user whose msExchMasterAccountSid
    names the account. The Exchange attributes move from the account to it."""
    mailboxes = []
    for account in accounts:
        mailboxes.append(
            AdObject(
                lab_guid("ad", FABRIKAM, "mailbox", account.sam),
                account.sam,
                f"CN={account.sam},{RESOURCE_OU}",
                "user",
                master_account_sid=account.object_sid,
                mailbox_guid=account.mailbox_guid,
                mail_nickname=account.mail_nickname,
                usage_location=account.usage_location,
            )
        )
        account.mailbox_guid = account.mail_nickname = account.usage_location = None
    return mailboxes


def _licensing_group(lab, members):
    """Group-based licensing: a cloud group assigns ENTERPRISEPACK; ``members`` joined it."""
    lab.skus.append(LabSku(EXCHANGESTANDARD_ID, "EXCHANGESTANDARD", prepaid=3))
    group = LabGroup(lab_guid("group", LICENSING_GROUP), LICENSING_GROUP, licenses=[GroupLicense(ENTERPRISEPACK_ID)])
    lab.groups.append(group)
    for ad in members:
        lab.add_group_member(group.id, ad.upn)


def _half_done(lab, users):
    """Solution 2 begun by hand and stuck: the OU taken out of scope in the wizard, whose
    full sync then stopped at the export deletion threshold, deleting nothing.

    The threshold is Entra Connect's default of 500 from 500 users on; a smaller lab
    gets a threshold of 10 so that its OU is over it too.
    """
    if users < 500:
        lab.set_deletion_threshold(10)
    ad = lab.ad_connector()
    lab.set_container_scope(ad.included_containers, (*ad.excluded_containers, HYBRID_OU))
    lab.run_cycle(SyncPolicy.INITIAL)  # stopped-deletion-threshold-exceeded
    lab.server.next_scheduled_at = lab.clock + lab.server.sync_interval


def _comma_names():
    """Two users whose names hold a comma (escaped in the DN, RFC 4514).

    "Smith, John" is in HybridUsers. "Doe,OU=HybridUsers" is directly in Corp, *outside*
    HybridUsers, although the text of its DN ends with ",OU=HybridUsers,OU=Corp,...".
    """
    smith = _ad_user(1, 2, HYBRID_OU, prefix="smith")
    smith.dn = "CN=Smith\\, John," + HYBRID_OU
    doe = _ad_user(1, 2, "OU=Corp,DC=contoso,DC=com", prefix="doe")
    doe.dn = "CN=Doe\\," + HYBRID_OU
    return [smith, doe]


def _old_object_in_bin(lab, ad):
    """An earlier cloud object of the same user in the recycle bin, same UPN.

    Its AD account was deleted and re-created three days ago (a new objectGUID, so a
    new cloud object); the old one, GUID and all, waits out its 30 days in the bin.
    """
    old = LabCloudUser(
        id=lab_guid("cloud", ad.sam, "before-re-creation"),
        upn=ad.upn,
        display_name=ad.display_name,
        immutable_id=lab_guid("ad", ad.sam, "before-re-creation"),
        synced=True,
        on_prem_dn=ad.dn,
        usage_location=ad.usage_location,
        mailbox_guid=ad.mailbox_guid,
        deleted_at=lab.clock - 3 * 24 * 60,
    )
    lab.cloud_users.append(old)


def _prepare(lab):
    """The article's Solution 1 done by hand, so drift and export have a settled world."""
    from attrs import evolve

    server = lab.server
    lab.set_scheduler(False)
    for name in ("In from AD - User Exchange", "In from AD - InetOrgPerson Exchange"):
        original = next(r for r in server.rules if r.name == name)
        flows = tuple(
            AttributeFlow(GUID_ATTRIBUTE, FlowType.EXPRESSION, expression="NULL", execute_once=True) if f.destination == GUID_ATTRIBUTE else f
            for f in original.flows
        )
        copy = evolve(original, identifier=lab_guid("custom", name), precedence=300 + original.precedence, flows=flows, is_standard=False, immutable_tag="")
        lab.set_rule_disabled(original.identifier, True)
        lab.put_rule(copy)
        lab.remove_rule(original.identifier)
        lab.put_rule(evolve(copy, precedence=original.precedence))
    lab.set_scheduler(True)
    lab.run_cycle(SyncPolicy.INITIAL)
    sku = ENTERPRISEPACK_ID
    for user in sorted(lab.active_cloud_users(), key=lambda u: u.upn):
        if not user.synced or not dn.below(user.on_prem_dn or "", HYBRID_OU):
            continue
        if user.license(sku) is not None:
            lab.remove_license(user.id, sku)
        try:
            lab.assign_license(user.id, sku)
        except Exception:  # noqa: BLE001 - users who cannot be licensed stay as they are
            pass
    lab.advance(lab.provisioning_minutes)
