"""A page of Get-ADSyncCSObject works out the metaverse joins only when it holds a
resource-forest mailbox (issue 19, final read C5).

The joins (Lab.metaverse_anchors) take every AD user's objectSid; each page of a
resource-forest lab's connector space did that again, 12 s a plan at 100,000 users. They
name only resource-forest mailboxes, so a page without one needs none of it; the pages
say the same as when each page asked for the joins.
"""

import json
import uuid

from providers.entraconnect import scripts
from providers.lab import scenario, world
from providers.lab.host import LabHost
from providers.lab.pwsh_interpreter import Interpreter


class _Sink:
    def __init__(self):
        self.out = []

    def output(self, item):
        self.out.append(item)

    def error(self, message, error_id=None):
        raise AssertionError(message)


def _pages(lab, size):
    """Every page of every AD connector's connector space, as the provider reads them (with joins)."""
    host, pages = LabHost(lab), []
    for connector in lab.ad_connectors():
        total = len(lab.connector_space(connector.identifier))
        for start in range(0, total, size):
            sink = _Sink()
            Interpreter(host, sink).run(scripts.connector_space_page(connector.identifier, start, size, joins=True))
            pages.append((connector.identifier, json.loads(sink.out[-1])["Objects"]))
    return pages


def _expected(lab, size):
    """What each page must say, worked out from the lab's joins directly."""
    anchors, expected = lab.metaverse_anchors(), []
    for connector in lab.ad_connectors():
        space = lab.connector_space(connector.identifier)
        for start in range(0, len(space), size):
            page = []
            for guid, dn, kind in space[start : start + size]:
                anchor = anchors.get(guid, guid)
                mv = str(uuid.uuid5(uuid.UUID(int=0), anchor)) if anchor else "00000000-0000-0000-0000-000000000000"
                page.append({"DN": dn, "Type": kind, "Connector": bool(anchor), "MV": mv})
            expected.append((connector.identifier, page))
    return expected


def test_only_the_pages_holding_a_resource_forest_mailbox_work_out_the_joins(monkeypatch):
    lab = scenario.build("resource-forest", users=30)
    mailboxes = {o.object_guid for o in lab.ad_objects if o.master_account_sid}
    assert mailboxes
    size = 4
    holding = 0
    for connector in lab.ad_connectors():
        space = lab.connector_space(connector.identifier)
        holding += sum(1 for start in range(0, len(space), size) if any(guid in mailboxes for guid, _dn, _kind in space[start : start + size]))
    expected = _expected(lab, size)
    calls = []
    real = world.Lab.metaverse_anchors
    monkeypatch.setattr(world.Lab, "metaverse_anchors", lambda self: calls.append(1) or real(self))
    pages = _pages(lab, size)
    assert pages == expected
    assert 0 < holding < len(pages)
    assert len(calls) == holding, f"{len(calls)} pages of {len(pages)} worked out the joins; {holding} hold a resource-forest mailbox"
