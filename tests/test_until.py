"""``apply --until``: an explicit offset, a time already past refused (never "tomorrow"), the deadline echoed."""

import datetime as dt

import pytest

from conftest import EXAMPLE
from providers.lab import store
from reconciler.cli.apply import deadline_line, parse_until
from reconciler.errors import ReconcilerError

UTC = dt.timezone.utc
NOW = dt.datetime(2026, 12, 4, 21, 10, tzinfo=UTC)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("23:30", dt.datetime(2026, 12, 4, 23, 30, tzinfo=UTC)),
        ("23:30Z", dt.datetime(2026, 12, 4, 23, 30, tzinfo=UTC)),
        ("23:00+01:00", dt.datetime(2026, 12, 4, 22, 0, tzinfo=UTC)),
        ("2026-12-04T23:00+01:00", dt.datetime(2026, 12, 4, 22, 0, tzinfo=UTC)),
        ("2026-12-05T05:30", dt.datetime(2026, 12, 5, 5, 30, tzinfo=UTC)),
        ("2026-12-05T05:30Z", dt.datetime(2026, 12, 5, 5, 30, tzinfo=UTC)),
        ("09:00+09:00", dt.datetime(2026, 12, 5, 0, 0, tzinfo=UTC)),  # already the 5th in Tokyo: 09:00 there is to come
    ],
)
def test_until_accepts_utc_an_offset_and_a_date(text, expected):
    assert parse_until(text, NOW) == expected


@pytest.mark.parametrize("text", ["21:00", "22:00+01:00", "2026-12-04T21:10Z", "2026-12-03T23:00"])
def test_a_time_already_past_is_refused_not_taken_as_tomorrow(text):
    with pytest.raises(ReconcilerError, match=r"has passed \(the target's clock reads 2026-12-04 21:10 UTC\); give a time still to come"):
        parse_until(text, NOW)


def test_an_unreadable_time_names_the_forms():
    with pytest.raises(ReconcilerError, match=r"--until 'half past ten': give HH:MM \(UTC"):
        parse_until("half past ten", NOW)


def test_the_deadline_is_echoed_in_utc_and_as_given():
    moment = parse_until("23:00+01:00", NOW)
    assert deadline_line(moment, NOW) == (
        "Deadline: 2026-12-04 22:00 UTC (23:00+01:00), 0 h 50 min from now on the target's clock; no step starts that cannot finish before it."
    )


def test_apply_refuses_a_past_until_before_changing_anything(cli):
    cli("lab", "init")
    # Lab time is 22:21 (see test_faults): 22:20 has passed.
    code, out, err = cli("apply", EXAMPLE, "--auto-approve", "--until", "22:20")
    assert code == 1
    assert err.startswith("error: --until 22:20: 2026-01-05 22:20 UTC has passed (the target's clock reads 2026-01-05 22:21 UTC)")
    assert store.load(".syncprep/lab.json").server.sync_cycle_enabled
    assert cli("plan", EXAMPLE, "--detailed-exitcode")[0] == 2  # nothing was applied
    code, out, _err = cli("apply", EXAMPLE, "--auto-approve", "--until", "22:25")
    assert out.startswith("Deadline: 2026-01-05 22:25 UTC, 0 h 04 min from now on the target's clock")
