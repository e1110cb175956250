"""The AD users of a loaded lab are read again from the lab file they were loaded from, when
used (issue 19: plan at 100,000 users neither decodes them twice nor keeps them in memory):
from that version of the file even after it was replaced, never from a file changed in place,
and the same where the file cannot be kept open (Windows)."""

import os
import re

import pytest

from providers.lab import scenario, store, store_lines
from providers.lab.store_encode import dumps_bytes, write_atomically
from reconciler.errors import LabError


@pytest.fixture
def lab():
    return scenario.build("default", users=20)


@pytest.fixture(params=["file kept open", "lines kept compressed"])
def keep_open(request, monkeypatch):
    monkeypatch.setattr(store_lines, "KEEP_FILE_OPEN", request.param == "file kept open")
    return store_lines.KEEP_FILE_OPEN


def test_ad_users_loaded_before_the_file_was_replaced_are_those_of_the_file_loaded(lab, tmp_path, keep_open):
    path = tmp_path / "lab.json"
    path.write_bytes(dumps_bytes(lab))
    loaded = store.load(path)
    assert loaded.ad_users.pending
    other = scenario.build("default", users=5)
    other.ad_users[0].display_name = "Someone else"
    write_atomically(path, [dumps_bytes(other)])  # a checkpoint renames a new file over it
    assert store.dumps(loaded).encode() == dumps_bytes(lab), "written back from the file it was loaded from"
    assert loaded.ad_users.pending
    assert [u.display_name for u in loaded.ad_users] == [u.display_name for u in lab.ad_users]
    assert loaded == lab


def test_ad_users_of_a_file_changed_in_place_since_it_was_loaded_are_refused_in_one_line(lab, tmp_path):
    path = tmp_path / "lab.json"
    path.write_bytes(dumps_bytes(lab))
    loaded = store.load(path)
    text = path.read_bytes()
    with open(path, "r+b") as fh:  # an editor writing in place, same size
        fh.write(text.replace(b"User 01", b"User 99", 1))
    with pytest.raises(LabError, match=re.escape(f"{path}: the lab file changed on disk while syncprep was using it")) as caught:
        len(loaded.ad_users)
    assert "\n" not in str(caught.value)
    with pytest.raises(LabError, match="changed on disk"):
        list(loaded.ad_users)  # still refused: not an empty list now
    with pytest.raises(LabError, match="changed on disk"):
        store.dumps(loaded)  # nor written back


def test_the_file_is_closed_once_the_ad_users_are_built_or_the_lab_dropped(lab, tmp_path):
    path = tmp_path / "lab.json"
    path.write_bytes(dumps_bytes(lab))
    loaded = store.load(path)
    closing = loaded.ad_users._packed.closing
    os.fstat(closing.peek()[2][0])  # open
    assert closing.alive
    assert len(loaded.ad_users) == len(lab.ad_users)
    assert not closing.alive
    loaded = store.load(path)
    closing = loaded.ad_users._packed.closing
    del loaded
    assert not closing.alive


def big_lab():
    """Users over many 64 KiB blocks of lines."""
    return scenario.build("default", users=700)


@pytest.mark.parametrize("name", ["ad_users", "cloud_users"])
def test_a_bad_user_far_into_a_long_list_is_named_by_its_line_and_index(tmp_path, keep_open, name):
    lab = big_lab()
    lines = store.dumps(lab).splitlines(keepends=True)
    first = 1 if name == "ad_users" else 2 + len(lab.ad_users)
    assert len("".join(lines[first : first + 650])) > 3 * store_lines._BLOCK
    path = tmp_path / "lab.json"
    for index in (0, 400, 649):
        bad = list(lines)
        bad[first + index] = bad[first + index].replace('"upn":', '"colour":"blue","upn":', 1)
        path.write_text("".join(bad))
        with pytest.raises(LabError, match=re.escape(f"unknown field `colour` - at `$.lab.{name}[{index}]`")):
            store.load(path)
        bad[first + index] = lines[first + index].replace('"upn":', '"upn" ', 1)
        path.write_text("".join(bad))
        with pytest.raises(LabError, match=rf"invalid JSON at line {first + index + 1}, column \d+"):
            store.load(path)


def test_a_long_lab_reads_back_equal_and_writes_back_the_same_bytes(tmp_path, keep_open):
    lab = big_lab()
    path = tmp_path / "lab.json"
    path.write_bytes(dumps_bytes(lab))
    loaded = store.load(path)
    assert loaded.ad_users.pending and store.ad_object_classes(loaded) == {u.object_guid: u.object_class for u in lab.ad_users}
    assert store.dumps(loaded).encode() == path.read_bytes()
    assert loaded == lab


@pytest.mark.parametrize("cut", ["in a line", "at a line's end", "before the last line"])
def test_a_long_lab_cut_short_is_refused_in_one_line(tmp_path, cut):
    text = dumps_bytes(big_lab())
    middle = len(text) // 2
    at = {"in a line": middle, "at a line's end": text.index(b"\n", middle) + 1, "before the last line": len(text) - len(b"]}}\n")}[cut]
    path = tmp_path / "lab.json"
    path.write_bytes(text[:at])
    with pytest.raises(LabError, match=r"invalid JSON at line \d+, column \d+ \(cut short\)") as caught:
        store.load(path)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("name", ["ad_users", "cloud_users"])
def test_a_user_written_over_several_lines_is_read_whole(lab, tmp_path, name):
    """Valid JSON in another layout (here: lines that do not end with a comma) is read whole, as before."""
    text = store.dumps(lab)
    lines = text.splitlines(keepends=True)
    line = lines[3 if name == "ad_users" else 4 + len(lab.ad_users)]
    path = tmp_path / "lab.json"
    path.write_text(text.replace(line, line.replace(',"', '\n,"', 2), 1))
    assert store.load(path) == lab


def hand_spread(lab):
    """The lab's file with AD users laid out by hand: one over two lines, two on one line
    (valid JSON; its lines, split at ``,\\n``, are not its users)."""
    lines = store.dumps(lab).splitlines(keepends=True)
    lines[3] = lines[3].replace('","', '",\n"', 1)  # a user over two lines, each ending with a comma
    lines[6] = lines[6].removesuffix(",\n") + "," + lines.pop(7)  # two users on one line
    return "".join(lines)


def test_ad_users_laid_out_by_hand_are_read_and_written_back_whole(lab, tmp_path, keep_open):
    path = tmp_path / "lab.json"
    path.write_text(hand_spread(lab))
    loaded = store.load(path)
    assert loaded.ad_users.pending
    assert store.dumps(loaded) == hand_spread(lab), "written back as read while not built"
    assert loaded == lab


def test_ad_users_laid_out_by_hand_then_changed_are_checkpointed_right(lab, tmp_path, keep_open):
    from providers.lab.provider import open_lab_target

    path = tmp_path / "lab.json"
    path.write_text(hand_spread(lab))
    target = open_lab_target(path)
    world = target.lab
    world.advance(1)
    target.checkpoint()  # written whole, the AD users as their lines: not built
    assert world.ad_users.pending
    world.ad_users[5].display_name = "Changed"  # builds them (whole: their lines are not theirs)
    world.ad_users[2].display_name = "Changed too"
    target.checkpoint()  # appended to the change log, by index
    assert store.changes_path(path).exists()
    assert store.load(path) == world
    target.close()
    assert not store.changes_path(path).exists()
    assert store.load(path) == world


def test_a_user_laid_out_over_two_lines_reads_the_same_wherever_the_blocks_are_cut(tmp_path, keep_open):
    """Final read C, C1: the lines are read 64 KiB at a time; a user spread over two lines across
    the cut between two blocks was refused as "cut short" (a valid file), one line earlier or
    later it was read."""
    big = scenario.build("default", users=700)
    lines = store.dumps(big).splitlines(keepends=True)
    pos, k = len(lines[0]), 1
    while pos + len(lines[k]) < len(lines[0]) + store_lines._BLOCK - 200:
        pos, k = pos + len(lines[k]), k + 1
    for j in range(k - 2, k + 4):
        spread = list(lines)
        spread[j] = spread[j].replace('","', '",\n"', 1)
        path = tmp_path / f"lab{j}.json"
        path.write_text("".join(spread))
        assert store.load(path) == big, j
