"""The lab file read and written with msgspec (issue 19): as strict and as faithful as before, and cheap to checkpoint."""

import json

import cattrs
import pytest

from providers.lab import scenario, store
from providers.lab.provider import LabTarget, open_lab_target
from providers.lab.world import Lab
from reconciler.errors import LabError

# What the file held when cattrs and json wrote it: the reference the msgspec path must match.
REFERENCE = cattrs.Converter(forbid_extra_keys=True)


def reference_document(lab):
    return {"format": "syncprep-lab", "version": 1, "lab": REFERENCE.unstructure(lab)}


@pytest.fixture
def lab():
    lab = scenario.build("default", users=20)
    lab.cloud_users[3].licenses[0].disabled_plans = ["a-plan"]
    lab.cloud_users[4].deleted_at = lab.clock
    return lab


def test_the_file_is_the_same_document_as_before_and_reads_back_equal(lab):
    assert json.loads(store.dumps(lab)) == reference_document(lab)
    assert store.loads(json.dumps(reference_document(lab))) == lab
    assert store.loads(store.dumps(lab).encode()) == lab


def line_layout(document):
    """The document laid out as store writes it: one user a line."""
    body = dict(document["lab"])
    ad, cloud = body.pop("ad_users"), body.pop("cloud_users")
    head = json.dumps({**{k: v for k, v in document.items() if k != "lab"}, "lab": body}, separators=(",", ":"))
    users = lambda items: ",\n".join(json.dumps(u) for u in items) + "\n"
    return head[:-2] + ',"ad_users":[\n' + users(ad) + '],"cloud_users":[\n' + users(cloud) + "]}}\n"


LAYOUTS = {"one-user-a-line": line_layout, "indented": lambda document: json.dumps(document, indent=1)}


def corrupt(lab, change, layout):
    document = reference_document(lab)
    change(document)
    return LAYOUTS[layout](document)


def test_the_file_has_one_user_a_line(lab):
    text = store.dumps(lab)
    assert json.loads(text) == reference_document(lab)
    lines = text.splitlines()
    assert len(lines) == 3 + len(lab.ad_users) + len(lab.cloud_users)
    assert json.loads(lines[1].rstrip(",")) == REFERENCE.unstructure(lab.ad_users[0])
    assert json.loads(lines[-2]) == REFERENCE.unstructure(lab.cloud_users[-1])


@pytest.mark.parametrize(
    "change, fragment",
    [
        (lambda d: d["lab"]["cloud_users"][2].update(colour="blue"), "unknown field `colour` - at `$.lab.cloud_users[2]`"),
        (lambda d: d["lab"]["ad_users"][0].update(extra=1), "unknown field `extra` - at `$.lab.ad_users[0]`"),
        (lambda d: d["lab"]["cloud_users"][1]["licenses"][0].update(seats=2), "unknown field `seats` - at `$.lab.cloud_users[1].licenses[0]`"),
        (lambda d: d["lab"].update(weather="fine"), "unknown field `weather`"),
        (lambda d: d.update(comment="hand-edited"), "unknown key 'comment'"),
        (lambda d: d["lab"]["server"]["rules"][0].update(colour="red"), "server.rules: extra fields found (colour)"),
        (lambda d: d["lab"]["server"].update(next_policy="Soon"), "server.next_policy: 'Soon' is not a valid SyncPolicy"),
        (lambda d: d["lab"]["cloud_users"][0].update(deleted_at="yesterday"), "Expected `int | null`, got `str` - at `$.lab.cloud_users[0].deleted_at`"),
        (lambda d: d["lab"]["ad_users"][1].pop("upn"), "missing required field `upn` - at `$.lab.ad_users[1]`"),
        (lambda d: d["lab"]["server"].update(connector_space={"x": "soon"}), "Expected `int`, got `str`"),
    ],
    ids=["cloud-user-key", "ad-user-key", "licence-key", "lab-key", "top-key", "rule-key", "enum", "type", "missing", "connector-space"],
)
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_a_key_or_value_the_lab_does_not_know_is_refused_in_one_line(lab, tmp_path, change, fragment, layout):
    path = tmp_path / "lab.json"
    path.write_text(corrupt(lab, change, layout))
    with pytest.raises(LabError) as caught:
        store.load(path)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{path}: corrupt lab file: ") and fragment in message, message


@pytest.mark.parametrize("cut", [1, 100, 5000, "line", -2])
def test_a_truncated_file_is_refused_in_one_line(lab, tmp_path, cut):
    text = store.dumps(lab)
    if cut == "line":  # cut at the end of a user's line: every line read is whole
        cut = text.index("\n", len(text) // 2) + 1
    path = tmp_path / "lab.json"
    path.write_text(text[:cut])
    with pytest.raises(LabError, match=r"invalid JSON at line \d+, column \d+ \(cut short\)") as caught:
        store.load(path)
    assert "\n" not in str(caught.value)


def test_a_broken_user_line_is_refused_with_its_line_number(lab, tmp_path):
    lines = store.dumps(lab).splitlines(keepends=True)
    lines[3] = lines[3].replace('"sam":', '"sam" ', 1)
    path = tmp_path / "lab.json"
    path.write_text("".join(lines))
    with pytest.raises(LabError, match=r"invalid JSON at line 4, column \d+"):
        store.load(path)


def test_planning_does_not_build_the_ad_users(lab, tmp_path):
    from conftest import EXAMPLE, plan_for

    path = tmp_path / "lab.json"
    store.save(lab, path)
    target = open_lab_target(path)
    assert plan_for(EXAMPLE, target).steps
    assert target.lab.ad_users.pending, "half of a 100,000-user lab is AD users that plan does not need built"


def test_ad_users_are_checked_at_load_but_built_only_when_used(lab, tmp_path):
    path = tmp_path / "lab.json"
    store.save(lab, path)
    written = path.read_bytes()
    loaded = store.load(path)
    assert type(loaded.ad_users).__name__ == "_LazyList" and loaded.ad_users.pending
    assert store.dumps(loaded).encode() == written, "saved back from the lines they were read from"
    assert store.ad_object_classes(loaded) == {u.object_guid: u.object_class for u in lab.ad_users}
    assert loaded.ad_users.pending
    assert len(loaded.ad_users) == len(lab.ad_users) and not loaded.ad_users.pending
    assert loaded == lab and store.dumps(loaded).encode() == written
    again, other = store.load(path), store.load(path)
    assert again.ad_users == other.ad_users and other.ad_users == again.ad_users, "two unfilled lists, either way round"


@pytest.mark.parametrize(
    "use",
    [
        lambda users: list(users),
        lambda users: [u.sam for u in users],
        lambda users: users[3].sam,
        lambda users: users == users[:],
        lambda users: bool(users),
        lambda users: users.append(users[0]) or len(users),
        lambda users: sorted(users, key=lambda u: u.upn)[0].upn,
        lambda users: repr(users)[:20],
        lambda users: users.index(users[2]),
        lambda users: len(users + []),
        lambda users: [] == users,
    ],
)
def test_lazy_ad_users_behave_as_a_list(lab, tmp_path, use):
    path = tmp_path / "lab.json"
    store.save(lab, path)
    expected = use(list(lab.ad_users))
    assert use(store.load(path).ad_users) == expected


def test_invalid_json_says_where(tmp_path):
    path = tmp_path / "lab.json"
    path.write_text('{"format": "syncprep-lab",\n "version": 1,\n "lab": {,}}')
    with pytest.raises(LabError, match=r"invalid JSON at line 3, column 10"):
        store.load(path)


def test_text_that_is_not_utf8_is_refused_in_one_line(lab, tmp_path):
    path = tmp_path / "lab.json"
    path.write_bytes(store.dumps(lab).replace("User 05", "Us\udcffer", 1).encode("utf-8", "surrogateescape"))
    with pytest.raises(LabError, match="corrupt lab file|invalid JSON") as caught:
        store.load(path)
    assert "\n" not in str(caught.value)


def test_a_checkpoint_after_a_step_that_changed_nothing_writes_nothing(lab, tmp_path):
    path = tmp_path / "lab.json"
    store.save(lab, path)
    target = open_lab_target(path)
    target.checkpoint()
    written = path.stat()
    target.checkpoint()  # nothing changed: the file is left as it is
    assert (path.stat().st_ino, path.stat().st_mtime_ns) == (written.st_ino, written.st_mtime_ns)
    target.lab.advance(1)
    target.checkpoint()
    assert path.stat().st_ino != written.st_ino
    assert store.load(path) == target.lab


def test_refresh_reads_the_file_again_only_if_another_process_changed_it(lab, tmp_path):
    path = tmp_path / "lab.json"
    store.save(lab, path)
    target = open_lab_target(path)
    loaded = target.lab
    target.refresh()
    assert target.lab is loaded, "the same file version: no second read"
    other = store.load(path)
    other.advance(7)
    store.save(other, path)  # another apply, in another process, wrote meanwhile
    target.refresh()
    assert target.lab is not loaded and target.lab == other
    assert target.server.lab is target.lab and target.tenant.lab is target.lab


def test_a_file_edited_in_place_with_the_same_size_is_still_read_again(lab, tmp_path):
    path = tmp_path / "lab.json"
    store.save(lab, path)
    target = open_lab_target(path)
    text = path.read_text()
    path.write_text(text.replace('"clock":', '"clock":1', 1).replace('"scenario":"default"', '"scenario":"defaul"', 1))
    target.refresh()
    assert target.lab.scenario == "defaul"
