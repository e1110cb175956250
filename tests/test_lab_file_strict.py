"""A lab file's AD object classes and server files are checked as strictly as its other keys:
a typo ("grup", "User") or a file kept under a key the lab's cmdlets never look up was read
silently (a user of an unknown class matched no rule; a file under the wrong key was both
there and not there). Each is refused in one line naming the key path."""

import pytest

from providers.lab import scenario, store
from providers.lab.world import LabFile
from reconciler.cli.command import main
from reconciler.errors import LabError
from test_lab_store import LAYOUTS, corrupt

STATE = "c:\\programdata\\syncprep"


def _files(lab, *entries):
    lab.server.files = {STATE: LabFile("C:\\ProgramData\\syncprep", directory=True)}
    for key, entry in entries:
        lab.server.files[key] = entry
    return lab


@pytest.fixture
def lab():
    return _files(scenario.build("default", users=6))


def _set_file(key, **entry):
    return lambda d: d["lab"]["server"]["files"].update({key: {"directory": False, "content": "", "acl": None, "protected": False, **entry}})


@pytest.mark.parametrize(
    "change, fragment",
    [
        (lambda d: d["lab"]["ad_objects"][0].update(object_class="grup"), "'grup' - at `$.lab.ad_objects[0].object_class`"),
        (lambda d: d["lab"]["ad_users"][1].update(object_class="User"), "'User' - at `$.lab.ad_users[1].object_class`"),
        (lambda d: d["lab"]["ad_users"][0].update(object_class="inetorgperson"), "'inetorgperson' - at `$.lab.ad_users[0].object_class`"),
        (_set_file(STATE + "\\lock.jsn", path="C:\\ProgramData\\syncprep\\lock.json"), ("the key is not the path 'C:\\ProgramData\\syncprep\\lock.json' in lower case", '`$.lab.server.files["c:\\\\programdata\\\\syncprep\\\\lock.jsn"]`')),
        (_set_file("C:\\ProgramData\\syncprep\\a.lock", path="C:\\ProgramData\\syncprep\\a.lock"), ("in lower case", '`$.lab.server.files["C:\\\\ProgramData\\\\syncprep\\\\a.lock"]`')),
        (_set_file("c:\\programdata\\other\\a.lock", path="C:\\ProgramData\\other\\a.lock"), "the folder of 'C:\\ProgramData\\other\\a.lock' is not in the lab"),
        (_set_file("d:\\a.lock", path="D:\\a.lock"), "'D:\\a.lock' is not an absolute path on C:\\"),
        (_set_file("c:\\programdata", path="C:\\ProgramData", directory=True), "'C:\\ProgramData' is built into the lab's server"),
        (_set_file(STATE + "\\sub", path="C:\\ProgramData\\syncprep\\sub", directory=True, content="x"), "the folder 'C:\\ProgramData\\syncprep\\sub' has content"),
        (_set_file(STATE + "\\a.lock", path="C:\\ProgramData\\syncprep\\a.lock", colour="red"), "extra fields found (colour)"),
    ],
    ids=["object-class", "user-class", "user-class-case", "file-key", "file-key-case", "no-folder", "other-drive", "built-in", "folder-content", "file-field"],
)
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_an_unknown_object_class_or_a_misfiled_file_is_refused_in_one_line(lab, tmp_path, change, fragment, layout):
    fragments = fragment if isinstance(fragment, tuple) else (fragment,)
    path = tmp_path / "lab.json"
    path.write_text(corrupt(lab, change, layout))
    with pytest.raises(LabError) as caught:
        store.load(path)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{path}: corrupt lab file: ") and all(f in message for f in fragments), message


def test_what_the_cmdlets_make_still_loads(lab, tmp_path):
    lab = _files(
        lab,
        (STATE + "\\locks", LabFile("C:\\ProgramData\\syncprep\\Locks", directory=True, acl=["CONTOSO\\syncadmin"], protected=True)),
        (STATE + "\\locks\\t1.lock", LabFile("C:/ProgramData/syncprep/Locks/T1.lock", content="{}\r\n")),
    )
    lab.ad_users[0].object_class = "inetOrgPerson"
    path = tmp_path / "lab.json"
    store.save(lab, path)
    assert store.load(path) == lab
    assert sorted(o.object_class for o in store.load(path).ad_objects) == sorted(o.object_class for o in lab.ad_objects)


def test_a_user_line_with_an_unknown_class_is_one_line_on_the_command_line(lab, tmp_path, capsys):
    lab.ad_users[2].object_class = "person"
    path = tmp_path / "lab.json"
    store.save(lab, path)
    code = main(["--no-color", "lab", "show", "--lab", str(path)])
    err = capsys.readouterr().err
    assert code != 0 and "Traceback" not in err and err.count("\n") == 1, err
    assert "corrupt lab file" in err and "`$.lab.ad_users[2].object_class`" in err, err
