"""A verb whose standard output fails other than by a closed pipe (a full disk:
``syncprep validate FILE > /dev/full``) said "error: file: No space left on device", naming a
file nobody gave. It now says what failed, as --help into a full disk does
(tests/test_help_into_a_failing_output.py): one line on stderr, exit 1, no traceback."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")

ROOT = Path(__file__).resolve().parent.parent


def _into_dev_full(*args, cwd=None):
    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, "-m", "reconciler.cli", *args], stdout=full, stderr=subprocess.PIPE, timeout=120, text=True, cwd=cwd)
    return done.returncode, done.stderr


def test_validate_into_a_full_disk_says_the_output_could_not_be_written():
    assert _into_dev_full("validate", str(ROOT / "desired-state" / "example.toml")) == (1, "error: cannot write the output: No space left on device\n")


def test_plan_into_a_full_disk_says_the_output_could_not_be_written(tmp_path):
    code, err = _into_dev_full("--no-color", "plan", str(ROOT / "desired-state" / "example.toml"), cwd=tmp_path)
    assert (code, err) == (1, "error: cannot write the output: No space left on device\n")


@pytest.mark.parametrize(
    "args",
    [("plan", "--json", "EXAMPLE"), ("drift", "--json", "EXAMPLE"), ("export",), ("completion", "bash"), ("show", "--markdown", "PLAN")],
    ids=["plan-json", "drift-json", "export", "completion", "show-markdown"],
)
def test_a_verb_that_writes_its_output_whole_into_a_full_disk_says_the_same(tmp_path, args):
    """plan/drift/show --json, show/drift --markdown, export and completion write their text in
    one piece, not through rich's printing: the same line (they said "error: file: ...")."""
    example = str(ROOT / "desired-state" / "example.toml")
    if "PLAN" in args:
        made = subprocess.run([sys.executable, "-m", "reconciler.cli", "plan", example, "-out", "saved.json"], capture_output=True, timeout=120, cwd=tmp_path)
        assert made.returncode in (0, 2), made.stderr
    args = [{"EXAMPLE": example, "PLAN": "saved.json"}.get(arg, arg) for arg in args]
    assert _into_dev_full(*args, cwd=tmp_path) == (1, "error: cannot write the output: No space left on device\n")


def test_a_file_that_cannot_be_read_is_still_named(tmp_path):
    """The other OSErrors keep naming their file."""
    code, err = _into_dev_full("validate", str(tmp_path / "missing.toml"))
    assert code == 1 and "missing.toml" in err and "cannot write the output" not in err
