"""A served lab saves its file after a script that changed it, and only then (issue 19).

A script of cmdlets that only read (``Cmdlet.reads_only``) leaves the lab file as it was:
same inode, same modification time, same bytes, no change log, and the lab is not even
encoded to find that out. Every cmdlet that may change the lab still has its change on
disk when the script ends. Lab time that passed in a session not saved is saved at close.
"""

import os

import pytest
from attrs import evolve

from providers.entraconnect import scripts
from providers.lab import scenario, store
from providers.lab.host import LabHost
from providers.lab.pwsh_interpreter import CMDLETS, Interpreter
from providers.lab.world import LabFile
from reconciler.model import JoinCondition, ScopeCondition, SyncPolicy
from reconciler.rules import copy_identifier
from sink import Sink

AAD_USER = "sync-admin@contoso.onmicrosoft.com"
PREAMBLE = "$ErrorActionPreference = 'Stop'\nImport-Module ADSync\n"
FOLDER = "C:\\ProgramData\\speed"
CUSTOM = copy_identifier("speed-host")


def _lab():
    """The default lab with a folder, a file and an ACL in it (what the file cmdlets read)."""
    lab = scenario.build("default", users=6)
    lab.server.files[FOLDER.lower()] = LabFile(FOLDER, directory=True, acl=["CONTOSO\\syncadmin", "BUILTIN\\Administrators"], protected=True)
    lab.server.files[FOLDER.lower() + "\\a.txt"] = LabFile(FOLDER + "\\a.txt", content="one\r\n")
    return lab


def _written_elsewhere(tmp_path, lab):
    """The lab's file as another process (``syncprep lab init``) would have left it."""
    path = tmp_path / "lab.json"
    path.write_bytes(store.dumps_bytes(lab))
    return path


def _run(host, script):
    sink = Sink()
    Interpreter(host, sink, identity="CONTOSO\\syncadmin").run(script)
    return sink


def _disk(path):
    stat = os.stat(path)
    return stat.st_ino, stat.st_mtime_ns, stat.st_size, path.read_bytes(), store.changes_path(path).exists()


def _cmdlets_in(script):
    words = {w.lower() for w in script.replace("(", " ").replace(")", " ").split()}
    return {c.name for key, c in CMDLETS.items() if key in words}


def _reading_scripts(lab):
    ad, aad = lab.ad_connector(), lab.aad_connector()
    stock = lab.server.rules[0]
    built_not_added = scripts.put_rule(_custom(lab)).split("Add-ADSyncRule")[0]  # New-ADSyncRule and the groups, in the script only
    return [
        scripts.observe(AAD_USER),
        scripts.poll_cycle(),
        scripts.precheck_rule(stock.identifier),
        scripts.read_rule(stock.identifier),
        scripts.connector_space_page(ad.identifier, 0, 3, joins=True),
        scripts.connector_statistics(ad.name),
        scripts.read_connector(aad.identifier),
        scripts.read_threshold(AAD_USER),
        built_not_added,
        PREAMBLE + "(Get-Command -Name 'Get-ADSyncRule').Parameters.Keys | ConvertTo-Json -Compress\n"
        "@(Get-ADSyncRule) | Where-Object -Property 'Name' -EQ -Value 'In from AD - User Join' | ConvertTo-Json -Depth 1\n"
        "Get-Date -Format o\nWrite-Error -Message 'only a message' -ErrorAction Continue",
        PREAMBLE + f"Test-Path -LiteralPath '{FOLDER}\\a.txt'\nGet-Content -LiteralPath '{FOLDER}\\a.txt' -Raw\n"
        f"$acl = Get-Acl -LiteralPath '{FOLDER}'\n$acl.Access.Count\n"
        "$rule = New-Object -TypeName System.Security.AccessControl.FileSystemAccessRule -ArgumentList 'CONTOSO\\other', 'FullControl', 'None', 'None', 'Allow'\n"
        "$acl.AddAccessRule($rule)\n[System.Security.Principal.WindowsIdentity]::GetCurrent().Name",
    ]


def _custom(lab):
    stock = next(r for r in lab.server.rules if r.name == "In from AD - User Exchange")
    return evolve(
        stock, identifier=CUSTOM, name="Custom - speed", precedence=70, is_standard=False, immutable_tag="",
        scope=((ScopeCondition("mailNickname", "ISNOTNULL"),),), join=((JoinCondition("objectGUID", "sourceAnchorBinary", True),),),
    )


def _changing_scripts(lab):
    ad, aad = lab.ad_connector(), lab.aad_connector()
    acl = (
        "$acl = New-Object -TypeName System.Security.AccessControl.DirectorySecurity\n$acl.SetAccessRuleProtection($true, $false)\n"
        "$acl.AddAccessRule((New-Object -TypeName System.Security.AccessControl.FileSystemAccessRule -ArgumentList 'CONTOSO\\syncadmin', "
        "'FullControl', 'ContainerInherit, ObjectInherit', 'None', 'Allow'))\n"
    )
    return [
        scripts.set_scheduler(False),
        scripts.put_rule(_custom(lab)),
        scripts.remove_rule(CUSTOM),
        scripts.set_container_scope(ad.identifier, ("OU=Corp,DC=contoso,DC=com",), ("OU=ServiceAccounts,OU=Corp,DC=contoso,DC=com",)),
        scripts.set_excluded_attributes(aad.identifier, ("msExchMailboxGuid",)),
        scripts.set_deletion_threshold(1500, AAD_USER),
        scripts.set_deletion_threshold(None, AAD_USER),
        scripts.start_cycle(SyncPolicy.DELTA),
        PREAMBLE + f"$null = New-Item -ItemType Directory -Path '{FOLDER}\\new'",
        PREAMBLE + f"$null = New-Item -ItemType File -Path '{FOLDER}\\new\\b.txt' -Value 'b'",
        PREAMBLE + f"Set-Content -LiteralPath '{FOLDER}\\a.txt' -Value 'two'",
        PREAMBLE + f"Add-Content -LiteralPath '{FOLDER}\\a.txt' -Value 'three'",
        PREAMBLE + acl + f"Set-Acl -LiteralPath '{FOLDER}\\new' -AclObject $acl",
        PREAMBLE + f"Remove-Item -LiteralPath '{FOLDER}\\new\\b.txt'",
    ]


def test_the_scripts_here_use_every_cmdlet_and_each_as_the_lab_classes_it():
    lab = _lab()
    reading = set().union(*map(_cmdlets_in, _reading_scripts(lab)))
    changing = set().union(*map(_cmdlets_in, _changing_scripts(lab))) - reading
    assert reading == {c.name for c in CMDLETS.values() if c.reads_only}
    assert changing == {c.name for c in CMDLETS.values() if not c.reads_only}


def test_a_script_that_only_reads_leaves_the_lab_file_untouched_and_is_not_encoded(tmp_path, monkeypatch):
    lab = _lab()
    path = _written_elsewhere(tmp_path, lab)
    before, in_memory = _disk(path), store.dumps_bytes(lab)
    saves = []
    real_save = store.save
    monkeypatch.setattr(store, "save", lambda *a: saves.append(a) or real_save(*a))
    host = LabHost.open(path)
    for script in _reading_scripts(host.lab):
        sink = _run(host, script)
        assert sink.out, script
        assert _disk(path) == before, script
        assert store.dumps_bytes(host.lab) == in_memory, script
    assert saves == []
    host.close()
    assert _disk(path) == before


@pytest.mark.parametrize("index", range(14))
def test_a_change_made_by_each_kind_of_cmdlet_reaches_the_lab_file(tmp_path, index):
    lab = _lab()
    path = _written_elsewhere(tmp_path, lab)
    host = LabHost.open(path)
    changing = _changing_scripts(host.lab)
    assert len(changing) == 14
    for script in changing[:index]:
        _run(host, script)
    on_disk = store.dumps_bytes(store.load(path))
    assert on_disk == store.dumps_bytes(host.lab)
    _run(host, changing[index])
    assert store.dumps_bytes(host.lab) != on_disk, "the script changed the lab"
    assert store.dumps_bytes(store.load(path)) == store.dumps_bytes(host.lab), "and the change is on disk"


def test_lab_time_a_reading_session_let_pass_is_saved_at_close(tmp_path):
    lab = _lab()
    path = _written_elsewhere(tmp_path, lab)
    ticks = iter(range(1000))
    host = LabHost(store.load(path), path, speed=1.0, monotonic=lambda: float(next(ticks)))
    clock = host.lab.clock
    _run(host, scripts.observe(AAD_USER))
    assert host.lab.clock == clock + 1
    assert store.load(path).clock == clock, "not saved by a script that only reads"
    _run(host, scripts.set_scheduler(False))
    assert store.load(path).clock == clock + 2 and not store.load(path).server.sync_cycle_enabled
    _run(host, scripts.observe(AAD_USER))
    host.close()
    assert store.load(path).clock == clock + 3
    assert store.dumps_bytes(store.load(path)) == store.dumps_bytes(host.lab)
