"""Review 3's findings, each reproduced before its fix (see /work/helpers/review-3.md)."""

import re
from pathlib import Path

import pytest

from providers.lab import scenario, store
from reconciler.cli.command import main

EXAMPLE = str(Path(__file__).resolve().parents[1] / "desired-state" / "example.toml")


@pytest.fixture
def lab(tmp_path):
    path = tmp_path / "lab.json"
    store.save(scenario.build("default", users=20), path)
    return path


# ---------------------------------------------------------------- 3. minute counters out of range


@pytest.mark.parametrize(
    "old,new,where",
    [
        (b'"clock":', b'"clock":99999999999999999999999999999', "$.lab.clock"),
        (b'"clock":', b'"clock":-999999999999', "$.lab.clock"),
        (b'"clock":', b'"clock":-1', "$.lab.clock"),
        (b'"next_scheduled_at":', b'"next_scheduled_at":9999999999999', "$.lab.server.next_scheduled_at"),
        (b'"sync_interval":', b'"sync_interval":-30', "$.lab.server.sync_interval"),
        (b'"cycle":null', b'"cycle":{"policy":"Delta","started_at":1,"ends_at":99999999999999}', "server.cycle.ends_at"),
    ],
)
def test_a_minute_counter_out_of_range_is_refused_in_one_line_at_its_key_path(lab, capsys, old, new, where):
    pattern = re.escape(old) + (rb"-?\d+" if old.endswith(b":") else b"")  # a key's number, or a literal
    data, count = re.subn(pattern, lambda _match: new, lab.read_bytes(), count=1)
    assert count == 1
    lab.write_bytes(data)
    for argv in (["lab", "show", "--lab", str(lab)], ["plan", EXAMPLE, "--lab", str(lab)]):
        code = main(["--no-color", *argv])
        err = capsys.readouterr().err
        assert code != 0 and "Traceback" not in err, err
        assert err.count("\n") == 1 and "corrupt lab file" in err and where in err, err


def test_a_running_cycle_with_minutes_in_range_still_loads(lab):
    data = lab.read_bytes().replace(b'"cycle":null', b'"cycle":{"policy":"Delta","started_at":1,"ends_at":5}', 1)
    lab.write_bytes(data)
    assert store.load(lab).server.cycle.ends_at == 5
