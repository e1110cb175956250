"""The lab file's small parts: the quick road (providers.lab.store_structure, issue 19) against
the cattrs converter it stands in for. On every lab a scenario builds it builds the same
values, without asking cattrs; on a broken copy it refuses whatever cattrs refuses."""

import attrs
import pytest

from providers.lab import scenario, store_structure
from providers.lab.store_decode import Corrupt, _bounded_cycle, converter, plain
from providers.lab.world import LabFile, RunningCycle, Server
from reconciler.model import SyncPolicy
from mutate import mutations, replaced

ROAD = store_structure.Road({RunningCycle: _bounded_cycle})


def _lab(name):
    lab = scenario.build(name, users=6)
    if name == "default":  # the parts no scenario has: a running cycle, the server's files
        lab.server.cycle = RunningCycle(SyncPolicy.INITIAL, 10, 40)
        lab.server.files = {"c:\\state": LabFile("C:\\State", directory=True, acl=["BUILTIN\\Administrators"], protected=True)}
    return lab


def _parts(lab):
    """(name, JSON value, type) of each field of the lab and its server that cattrs structured."""
    parts = []
    for owner in (lab, lab.server):
        attrs.resolve_types(type(owner))
        for f in attrs.fields(type(owner)):
            if f.init and not plain(f.type) and f.type is not Server and f.name not in ("ad_users", "ad_objects", "cloud_users"):
                parts.append((f.name, converter().unstructure(getattr(owner, f.name), f.type), f.type))
    return parts


def _both(value, tp):
    """(the quick road's value or its exception, the converter's value or its exception)."""
    results = []
    for road in (lambda: ROAD.structure(value, tp), lambda: converter().structure(value, tp)):
        try:
            results.append(road())
        except Exception as exc:  # noqa: BLE001 - compared below
            results.append(exc)
    return results


@pytest.mark.parametrize("name", scenario.SCENARIOS)
def test_the_quick_road_builds_what_cattrs_builds(name):
    parts = _parts(_lab(name))
    assert {part for part, _value, _tp in parts} >= {"rules", "connectors", "skus", "groups", "next_policy"}
    for part, value, tp in parts:
        quick, strict = _both(value, tp)
        assert not isinstance(quick, Exception), (part, quick)  # the quick road is the road taken
        assert repr(quick) == repr(strict), part  # repr: every field, those compared or not


OTHERS = ["text", "Delta", 7, -1, 2.5, True, None, [], {}, ["x"], [{}]]  # another type, or a wrong value


@pytest.mark.parametrize("name", ["default", "group-licensed"])
def test_the_quick_road_refuses_whatever_cattrs_refuses(name):
    checked = refused = 0
    for part, value, tp in _parts(_lab(name)):
        for path, new in mutations(value, OTHERS, first_item_only=True):
            quick, strict = _both(replaced(value, path, new), tp)
            if isinstance(strict, Exception):
                assert isinstance(quick, Exception), (part, path, new, quick)
                refused += 1
            elif not isinstance(quick, Exception):
                assert repr(quick) == repr(strict), (part, path, new)
            checked += 1
    assert checked > 1000 and refused > 100


def test_a_running_cycle_out_of_bounds_is_corrupt_on_both_roads():
    value = {"policy": "Delta", "started_at": 10**12, "ends_at": 30}
    quick, strict = _both(value, RunningCycle)
    assert isinstance(quick, Corrupt) and isinstance(strict, Corrupt) and str(quick) == str(strict)


@pytest.mark.parametrize(
    "written, message",
    [
        ('"policy":"initial"', "server.cycle: invalid value for type, expected SyncPolicy @ $.policy"),
        ('"started_at":99999999999', "server.cycle.started_at: Expected `int` <= 4192859640"),
        ('"started_at":"10"', None),  # cattrs reads "10" as 10: so does the lab, as before
    ],
)
def test_a_lab_file_with_a_wrong_part_is_read_or_refused_as_before(tmp_path, written, message):
    from providers.lab import store
    from reconciler.errors import LabError

    path = tmp_path / "lab.json"
    store.save(_lab("default"), path)
    text = path.read_text()
    assert '"policy":"Initial","started_at":10' in text
    path.write_text(text.replace(written.split(":")[0] + ":" + ('"Initial"' if "policy" in written else "10"), written, 1))
    if message is None:
        assert store.load(path).server.cycle == RunningCycle(SyncPolicy.INITIAL, 10, 40)
        return
    with pytest.raises(LabError) as refused:
        store.load(path)
    assert str(refused.value) == f"{path}: corrupt lab file: {message}"
