"""A JSON-able summary of a lab, for ``syncprep lab show`` (text and ``--json``)."""

from __future__ import annotations

from reconciler.model import GUID_ATTRIBUTE
from providers.lab.world import minute_to_iso


def lab_summary(lab, path):
    server = lab.server
    ad, aad = lab.ad_connector(), lab.aad_connector()
    sku_names = {s.sku_id: s.part_number for s in lab.skus}
    connector_names = {c.identifier.lower(): c.name for c in server.connectors}
    consumed = lab.consumed_units()
    guid_rules = []
    for rule in sorted(server.rules, key=lambda r: r.precedence):
        flows = rule.flows_to(GUID_ATTRIBUTE)
        if flows:
            guid_rules.append(
                {"precedence": rule.precedence, "name": rule.name, "enabled": not rule.disabled, "standard": rule.is_standard, "flow": flows[0].describe(),
                 "connector": connector_names.get(rule.connector.lower(), rule.connector)}
            )
    users = []
    ad_by_upn = {u.upn.lower(): u for u in lab.ad_users}
    for user in lab.active_cloud_users():
        ad_user = ad_by_upn.get(user.upn.lower())
        users.append(
            {
                "upn": user.upn,
                "id": user.id,
                "synced": user.synced,
                "object_class": ad_user.object_class if ad_user and user.synced else None,
                "on_prem_dn": user.on_prem_dn,
                "usage_location": user.usage_location,
                "mailbox_guid": user.mailbox_guid,
                "licenses": [sku_names.get(lic.sku_id, lic.sku_id) for lic in user.licenses],
                "mailbox": lab.mailbox_state(user),
            }
        )
    return {
        "path": str(path),
        "scenario": lab.scenario,
        "clock": lab.now,
        "server": {
            "build": server.build,
            "scheduler_enabled": server.sync_cycle_enabled,
            "next_policy": server.next_policy.value,
            "next_scheduled_cycle": minute_to_iso(server.next_scheduled_at) if server.sync_cycle_enabled else None,
            "cycle_ends": minute_to_iso(server.cycle.ends_at) if server.cycle else None,
            "staging_mode": server.staging_mode,
            "deletion_threshold": server.deletion_threshold,
            "included": list(ad.included_containers),
            "excluded": list(ad.excluded_containers),
            # Every AD connector's scope (one per forest); "included"/"excluded" are the first's.
            "ad_connectors": [{"name": c.name, "included": list(c.included_containers), "excluded": list(c.excluded_containers)} for c in lab.ad_connectors()],
            "excluded_attributes": list(aad.excluded_attributes),
            "rule_count": len(server.rules),
            "guid_rules": guid_rules,
            "last_runs": [
                {"connector": r.connector, "profile": r.profile, "result": r.result, "started": r.started, "ended": r.ended, "detail": r.detail}
                for r in server.run_history[-3:]
            ],
        },
        "tenant": {
            "skus": [{"part_number": s.part_number, "sku_id": s.sku_id, "prepaid": s.prepaid, "consumed": consumed.get(s.sku_id, 0)} for s in lab.skus],
            "groups": [
                {"name": g.display_name, "id": g.id, "licenses": [sku_names.get(x.sku_id, x.sku_id) for x in g.licenses], "members": len(g.members)}
                for g in lab.groups
            ],
            "with_mailbox": sum(1 for u in users if u["mailbox"] == "present"),
            "users": users,
            "deleted": [{"upn": u.upn, "id": u.id, "deleted_at": minute_to_iso(u.deleted_at)} for u in lab.cloud_users if u.deleted_at is not None],
        },
    }
