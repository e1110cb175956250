"""The JSON outputs follow the schemas published in schemas/ (issue 17): plan --json, drift --json
and the per-user report, over the example desired states and lab scenarios."""

import json
from pathlib import Path

import jsonschema
import pytest

from conftest import EXAMPLE, ROOT, UPGRADE_SAFE

REBUILD = ROOT / "desired-state" / "rebuild.toml"
SCHEMAS = ROOT / "schemas"


def validator(name):
    schema = json.loads((SCHEMAS / f"{name}.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def check(name, data):
    errors = sorted(validator(name).iter_errors(data), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors[:10])


CASES = [(d, s) for d in (EXAMPLE, REBUILD, UPGRADE_SAFE) for s in ("default", "half-done", "duplicate-upn-in-bin", "escaped-comma-dn")]
CASES += [(EXAMPLE, "already-prepared"), (REBUILD, "already-prepared"), (EXAMPLE, "group-licensed")]
CASES += [(ROOT / "desired-state" / "two-forests.toml", "two-forest"), (ROOT / "desired-state" / "waves.toml", "group-licensed")]


@pytest.mark.parametrize("desired, scenario", CASES, ids=[f"{d.stem}-{s}" for d, s in CASES])
def test_plan_json_follows_the_plan_schema(cli, scenario, desired):
    cli("lab", "init", "--scenario", scenario, "--force")
    code, out, err = cli("plan", desired, "--json", "--report", "users.json")
    assert code == 0, err
    check("plan", json.loads(out))
    check("report", json.loads(Path("users.json").read_text()))


def test_drift_json_follows_the_drift_schema_in_sync_and_drifted(cli):
    code, out, _ = cli("drift", EXAMPLE, "--json")
    assert code == 2
    check("drift", json.loads(out))
    cli("apply", EXAMPLE, "--auto-approve", "--report", "applied.json")
    check("report", json.loads(Path("applied.json").read_text()))
    assert all("as_desired" in row for row in json.loads(Path("applied.json").read_text())["users"])
    cli("lab", "upgrade")
    code, out, _ = cli("drift", EXAMPLE, "--json")
    check("drift", json.loads(out))


def test_a_schema_refuses_what_it_does_not_describe():
    """The schemas are strict: a field renamed or added without them fails the tests above."""
    with pytest.raises(jsonschema.ValidationError):
        validator("drift").validate({"format_version": 1, "source": "", "target": "", "in_sync": True, "complete": True, "drift": [], "unknown": [], "interrupted_apply": None, "new": 1})
    with pytest.raises(jsonschema.ValidationError):
        validator("report").validate({"users": []})
