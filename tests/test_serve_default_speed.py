"""The README's rehearsal as it is: `syncprep lab serve` at its default speed, with the
lab's scheduler running its own Delta cycles every 30 lab minutes (one every half
second), and the real providers on the other end.

The full sync's runs are soon many runs back in the history: the wait must find
them by its watermark however many runs came after.
"""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from providers.lab import scenario, store
from test_serve import SECRETS, remote_file


@pytest.fixture
def served_at_default_speed(tmp_path):
    store.save(scenario.build(), tmp_path / "lab.json")
    env = {**os.environ, **SECRETS, "NO_COLOR": "1"}
    script = Path(sys.executable).parent / "syncprep"
    server = subprocess.Popen(
        [str(script), "lab", "serve", "--lab", str(tmp_path / "lab.json")],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = server.stdout.readline()
        lines.append(line)
        if line.strip().startswith("aad_username"):
            break
    text = "".join(lines)
    assert "60 minutes per second" in text
    graph = re.search(r'endpoint = "(http://127\.0\.0\.1:\d+/v1\.0)"', text).group(1)
    port = int(re.search(r"port = (\d+)", text).group(1))
    env = {**env, "SYNCPREP_ALLOW_ENDPOINTS": re.search(r"^export SYNCPREP_ALLOW_ENDPOINTS=(\S+)$", text, re.M).group(1)}
    yield tmp_path, env, graph, port
    server.terminate()
    try:
        server.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait(timeout=10)


def test_apply_at_the_default_speed_finds_the_full_sync_among_later_cycles(served_at_default_speed):
    tmp_path, env, graph, port = served_at_default_speed
    desired = remote_file(tmp_path, graph, port)
    # Two seconds between polls: 120 lab minutes, four scheduled Delta cycles, twelve runs.
    desired.write_text(desired.read_text().replace("poll_seconds = 0.5\n\n[scheduler]", "poll_seconds = 2\n\n[scheduler]"))
    assert "poll_seconds = 2\n" in desired.read_text()
    script = Path(sys.executable).parent / "syncprep"
    try:
        applied = subprocess.run([str(script), "apply", str(desired), "--auto-approve"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the apply did not finish (it waits for a full sync it cannot see): {(exc.stdout or b'')[-1500:]!r}")
    # 4: every step done, some targeted users left without a licence (user07 has no usage location).
    assert applied.returncode == 4, applied.stdout[-3000:] + applied.stderr[-2000:]
    assert "Initial cycle" in applied.stdout and "all runs succeeded" in applied.stdout
    assert "Apply complete" in applied.stdout and re.search(r"done \((\d+) of \1 mailboxes present\)", applied.stdout)


def test_the_readme_rehearsal_with_the_default_poll_finishes(served_at_default_speed):
    # Ten seconds between polls: 600 lab minutes, twenty scheduled cycles, sixty runs per
    # poll; the lab keeps a week of run history, as the real scheduler does.
    tmp_path, env, graph, port = served_at_default_speed
    desired = remote_file(tmp_path, graph, port)
    text = desired.read_text().replace('auth = "basic"\npoll_seconds = 0.5\n', 'auth = "basic"\n')
    assert text != desired.read_text()
    desired.write_text(text)
    script = Path(sys.executable).parent / "syncprep"
    try:
        applied = subprocess.run([str(script), "apply", str(desired), "--auto-approve"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the apply did not finish (it waits for a full sync it cannot see): {(exc.stdout or b'')[-1500:]!r}")
    assert applied.returncode == 4, applied.stdout[-3000:] + applied.stderr[-2000:]
    assert "all runs succeeded" in applied.stdout
