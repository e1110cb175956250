"""The lab's Get-ADSyncCSObject binds -StartIndex and -MaxResultCount as the real cmdlet does:
build 2.2.8.0 gives them [ValidateRange] (adsync-signatures.json: StartIndex 0, MaxResultCount 1,
to Int32.MaxValue), so a value below is refused when binding, never taken as Python's
"from the end" (a negative start gave the last objects of the connector space)."""

import json

import pytest

from providers.lab import scenario
from providers.lab.host import LabHost
from providers.lab.pwsh_interpreter import CMDLETS, Interpreter, ScriptError
from sink import Sink


def _connector(lab):
    return next(c for c in lab.server.connectors if c.kind == "AD").identifier


def _bound(lab, start, count):
    """The cmdlet given the values PowerShell's binder hands it (a script cannot write a negative
    number in the lab: its interpreter refuses a unary minus as not simulated)."""
    it = Interpreter(LabHost(lab), Sink())
    it.lab = lab
    named = {"connectoridentifier": _connector(lab), "startindex": start, "maxresultcount": count}
    return [item["DistinguishedName"] for item in CMDLETS["get-adsynccsobject"].run(it, named, [], None)]


def _page(lab, parameters):
    sink = Sink()
    script = f"Import-Module ADSync\nGet-ADSyncCSObject -ConnectorIdentifier '{_connector(lab)}' {parameters} | ConvertTo-Json -Compress"
    Interpreter(LabHost(lab), sink).run(script)
    found = json.loads(sink.out[-1]) if sink.out else []
    return [item["DistinguishedName"] for item in (found if isinstance(found, list) else [found])]


@pytest.mark.parametrize(
    "start, count, refused",
    [
        (-1, 5, "Cannot validate argument on parameter 'StartIndex'. The -1 argument is less than the minimum allowed range of 0. Supply an argument"),
        (0, 0, "Cannot validate argument on parameter 'MaxResultCount'. The 0 argument is less than the minimum allowed range of 1. Supply an argument"),
        (0, -3, "Cannot validate argument on parameter 'MaxResultCount'. The -3 argument is less than the minimum allowed range of 1."),
        (2**31, 5, 'Cannot convert value "2147483648" to type "System.Int32".'),
    ],
    ids=["negative-start", "zero-count", "negative-count", "past-int32"],
)
def test_a_start_or_count_out_of_range_is_refused_when_binding(start, count, refused):
    lab = scenario.build(users=6)
    with pytest.raises(ScriptError) as caught:
        _bound(lab, start, count)
    assert refused in str(caught.value)
    assert caught.value.error_id in ("ParameterArgumentValidationError", "ParameterArgumentTransformationError")


def test_a_script_with_a_negative_start_is_refused_not_paged_from_the_end():
    lab = scenario.build(users=6)
    with pytest.raises(ScriptError):
        _page(lab, "-StartIndex -1 -MaxResultCount 5")


def test_pages_in_range_still_cover_the_connector_space_once():
    lab = scenario.build(users=6)
    everything = _page(lab, "-StartIndex 0 -MaxResultCount 1000")
    assert _bound(lab, 0, 1000) == everything and len(everything) > 4
    pages = [_page(lab, f"-StartIndex {start} -MaxResultCount 4") for start in range(0, len(everything) + 4, 4)]
    assert [dn for page in pages for dn in page] == everything
