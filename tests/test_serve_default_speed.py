"""The README's rehearsal as it is: `syncprep lab serve` at its default speed, with the
lab's scheduler running its own Delta cycles every 30 lab minutes (one every half
second), and the real providers on the other end.

The full sync's runs are soon many runs back in the history: the wait must find
them by its watermark however many runs came after.
"""

import re
import subprocess

import pytest

from providers.lab import scenario
from test_serve import _serve, remote_file, run


@pytest.fixture
def served_at_default_speed(tmp_path):
    """`lab serve` as the README runs it: the default scenario at the default speed."""
    yield from _serve(tmp_path, lab=scenario.build())


def test_apply_at_the_default_speed_finds_the_full_sync_among_later_cycles(served_at_default_speed):
    tmp_path, env, graph, port, text = served_at_default_speed
    assert "60 minutes per second" in text
    desired = remote_file(tmp_path, graph, port)
    # Two seconds between polls: 120 lab minutes, four scheduled Delta cycles, twelve runs.
    desired.write_text(desired.read_text().replace("poll_seconds = 0.5\n\n[scheduler]", "poll_seconds = 2\n\n[scheduler]"))
    assert "poll_seconds = 2\n" in desired.read_text()
    try:
        applied = run(env, tmp_path, "apply", desired, "--auto-approve", timeout=240)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the apply did not finish (it waits for a full sync it cannot see): {(exc.stdout or b'')[-1500:]!r}")
    # 4: every step done, some targeted users left without a licence (user07 has no usage location).
    assert applied.returncode == 4, applied.stdout[-3000:] + applied.stderr[-2000:]
    assert "Initial cycle" in applied.stdout and "all runs succeeded" in applied.stdout
    assert "Apply complete" in applied.stdout and re.search(r"done \((\d+) of \1 mailboxes present\)", applied.stdout)


def test_the_readme_rehearsal_with_the_default_poll_finishes(served_at_default_speed):
    # Ten seconds between polls: 600 lab minutes, twenty scheduled cycles, sixty runs per
    # poll; the lab keeps a week of run history, as the real scheduler does.
    tmp_path, env, graph, port, text = served_at_default_speed
    assert "60 minutes per second" in text
    desired = remote_file(tmp_path, graph, port)
    text = desired.read_text().replace('auth = "basic"\npoll_seconds = 0.5\n', 'auth = "basic"\n')
    assert text != desired.read_text()
    desired.write_text(text)
    try:
        applied = run(env, tmp_path, "apply", desired, "--auto-approve", timeout=240)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the apply did not finish (it waits for a full sync it cannot see): {(exc.stdout or b'')[-1500:]!r}")
    assert applied.returncode == 4, applied.stdout[-3000:] + applied.stderr[-2000:]
    assert "all runs succeeded" in applied.stdout
