"""The lab server's file system, for the ``server`` state backend's scripts.

The cmdlets act on ``lab.server.files`` as Windows PowerShell 5.1's FileSystem
provider acts on NTFS, strictly: paths are case-insensitive and absolute; a file
needs its folder; ``New-Item`` refuses an item that exists (unless ``-Force``, which
for a file would overwrite it); ``Get-Content`` and ``Remove-Item`` of a missing path
fail with "Cannot find path"; a folder with items in it is not removed without
``-Recurse`` (which the lab does not simulate); ``-Path`` takes wildcards, so the
lab refuses a ``-Path`` with one (use ``-LiteralPath``). An error is terminating
under ``$ErrorActionPreference = 'Stop'`` and goes to the error stream otherwise.

Access: a folder's own ACL (``Set-Acl``) lets in only the identities it names;
``BUILTIN\\Administrators`` lets in the session's account, which is a local
administrator (Lab assumption: WinRM's default endpoint admits administrators only).
Lab assumption: a rule's rights are not looked at (the state backend grants FullControl
only), and an ACL with a Deny rule is refused as not simulated rather than half obeyed.

Lab assumptions, all: ``C:\\`` and ``C:\\ProgramData`` exist; the session's Windows
identity is ``<NETBIOS domain>\\<WinRM user name>``; ``New-Item -ItemType File``
creates the file exclusively (FileMode.CreateNew) and then writes ``-Value``; the
whole script runs as one step of the lab (the real server's file operations are
atomic one by one, which is all the state backend's protocol relies on).
"""

from __future__ import annotations

import json

from providers.lab import pwsh_objects as pw
from providers.lab.world import LabFile

ADMINISTRATORS = "BUILTIN\\Administrators"
BUILT_IN_FOLDERS = ("c:", "c:\\programdata")
DIRECTORY_SECURITY = "System.Security.AccessControl.DirectorySecurity"
FILE_SECURITY = "System.Security.AccessControl.FileSecurity"
ACCESS_RULE = "System.Security.AccessControl.FileSystemAccessRule"
WINDOWS_IDENTITY = "System.Security.Principal.WindowsIdentity"
RIGHTS = ("FullControl", "Modify", "ReadAndExecute", "Read", "Write")
INHERITANCE = ("None", "ContainerInherit", "ObjectInherit")
PROPAGATION = ("None", "NoPropagateInherit", "InheritOnly")
WILDCARDS = "*?[]"


def _key(path):
    return path.replace("/", "\\").rstrip("\\").lower()


def _parent(key):
    return key.rpartition("\\")[0] if "\\" in key else None


def check_files(files):
    """The first thing wrong with a lab file's ``server.files`` (what, at which key path), or None.

    What NTFS would not hold, or the cmdlets here could not find, is refused: each entry is
    kept under its path in lower case (``_key``), an absolute path on C:\\ that is not a
    built-in folder, in a folder that exists; a folder has no content."""
    for key, entry in files.items():
        where = f" - at `$.lab.server.files[{json.dumps(key)}]`"
        path = entry.path
        if len(path) < 4 or path[1:3] not in (":\\", ":/") or path[0].lower() != "c":
            return f"'{path}' is not an absolute path on C:\\{where}"
        if key != _key(path):
            return f"the key is not the path '{path}' in lower case ('{_key(path)}'){where}"
        if key in BUILT_IN_FOLDERS:
            return f"'{path}' is built into the lab's server, not one of its files{where}"
        if not _folder_in(files, _parent(key)):
            return f"the folder of '{path}' is not in the lab (a file or folder needs its folder){where}"
        if entry.directory and entry.content:
            return f"the folder '{path}' has content{where}"
    return None


def _folder_in(files, key):
    return key in BUILT_IN_FOLDERS or (key in files and files[key].directory)


def _fail(it, message, error_id):
    """A non-terminating error: terminating under -ErrorAction Stop, else to the error stream."""
    if it.stop:
        raise pw.ScriptError(message, error_id, "Management.Automation.ItemNotFoundException" if "Cannot find" in message else "System.IO.IOException")
    it.sink.error(message)
    return []


def identity(it):
    """The session's Windows account (Lab assumption: NETBIOS\\user)."""
    user = getattr(it, "identity", None) or "syncprep"
    if "\\" in user:
        return user
    return f"{it.lab.domain.split('.')[0].upper()}\\{user.split('@')[0]}"


def _path(it, cmdlet, named, positional, allow_wildcards=False):
    literal, path = named.get("literalpath"), named.get("path")
    if path is None and literal is None and positional:
        path = positional.pop(0)
    pw.refuse_positional(cmdlet, positional)
    if (literal is None) == (path is None):
        raise pw.ScriptError(f"{cmdlet}: Parameter set cannot be resolved using the specified named parameters.", "AmbiguousParameterSet")
    text = pw.single_value(cmdlet, literal if literal is not None else path, str)
    if path is not None and not allow_wildcards and any(c in text for c in WILDCARDS):
        raise pw.ScriptError(f"{cmdlet}: the lab refuses wildcard characters in -Path ({text}); use -LiteralPath", "NotSupported")
    if len(text) < 3 or text[1:3] not in (":\\", ":/") or text[0].lower() != "c":
        raise pw.ScriptError(f"{cmdlet}: the lab's server has only absolute paths on C:\\ (got '{text}')", "NotSupported")
    return text


def _exists(it, key):
    return key in BUILT_IN_FOLDERS or key in it.lab.server.files


def _is_folder(it, key):
    return key in BUILT_IN_FOLDERS or (key in it.lab.server.files and it.lab.server.files[key].directory)


def _allowed(it, key):
    """Whether the session may touch ``key``: every folder above with its own ACL must name it."""
    me = identity(it).lower()
    folder = _parent(key) if not _is_folder(it, key) else key
    while folder is not None:
        item = it.lab.server.files.get(folder)
        if item is not None and item.acl is not None:
            names = {n.lower() for n in item.acl}
            if me not in names and ADMINISTRATORS.lower() not in names:
                return False
        folder = _parent(folder)
    return True


def _check_access(it, text, key):
    if not _allowed(it, key):
        raise pw.ScriptError(f"Access to the path '{text}' is denied.", "UnauthorizedAccessException", "System.UnauthorizedAccessException")


def _item(entry):
    kind = "System.IO.DirectoryInfo" if entry.directory else "System.IO.FileInfo"
    return pw.PSObj(kind, FullName=entry.path, Name=entry.path.rpartition("\\")[2], Length=None if entry.directory else len(entry.content.encode("utf-8")))


def test_path(it, named, positional, _input):
    path_type = str(named.pop("pathtype", "Any"))
    text = _path(it, "Test-Path", named, positional)
    if path_type.lower() not in ("any", "leaf", "container"):
        raise pw.ScriptError(f"Test-Path: Cannot convert value \"{path_type}\" to type \"Microsoft.PowerShell.Commands.TestPathType\".", "InvalidCastException")
    key = _key(text)
    if not _exists(it, key) or not _allowed(it, key):
        return [False]
    if path_type.lower() == "leaf":
        return [not _is_folder(it, key)]
    if path_type.lower() == "container":
        return [_is_folder(it, key)]
    return [True]


def new_item(it, named, positional, _input):
    kind = str(named.get("itemtype", "File")).lower()
    if kind not in ("file", "directory"):
        raise pw.ScriptError(f"New-Item: the lab makes files and directories only, not '{named.get('itemtype')}'", "NotSupported")
    text = _path(it, "New-Item", {"path": named.get("path")} if "path" in named else {}, positional)
    key, files = _key(text), it.lab.server.files
    parent = _parent(key)
    if kind == "directory":
        # A directory is made with the folders above it (Directory.CreateDirectory), unlike a file.
        missing = []
        while parent is not None and not _exists(it, parent):
            missing.append(parent)
            parent = _parent(parent)
        if parent is None or not _is_folder(it, parent):
            return _fail(it, f"Could not find a part of the path '{text}'.", "NewItemIOError,Microsoft.PowerShell.Commands.NewItemCommand")
        _check_access(it, text, key)
        for folder in reversed(missing):
            files[folder] = LabFile(text[: len(folder)], directory=True)
    elif parent is None or not _is_folder(it, parent):
        return _fail(it, f"Could not find a part of the path '{text}'.", "NewItemIOError,Microsoft.PowerShell.Commands.NewItemCommand")
    _check_access(it, text, key)
    force = bool(named.get("force"))
    if _exists(it, key):
        if kind == "directory" and _is_folder(it, key) and force:
            return [_item(files[key])] if key in files else []
        what = "An item with the specified name" if kind == "directory" else "The file"
        return _fail(it, f"{what} '{text}' already exists.", "NewItemIOError,Microsoft.PowerShell.Commands.NewItemCommand")
    value = named.get("value")
    files[key] = LabFile(text, directory=kind == "directory", content="" if value is None else pw.as_text(value))
    return [_item(files[key])]


def _read(it, cmdlet, named, positional):
    text = _path(it, cmdlet, named, positional)
    key = _key(text)
    if not _exists(it, key):
        return text, key, None
    _check_access(it, text, key)
    return text, key, it.lab.server.files.get(key)


def get_content(it, named, positional, _input):
    raw = bool(named.pop("raw", False))
    _encoding(named)
    text, _key_, entry = _read(it, "Get-Content", named, positional)
    if entry is None:
        return _fail(it, f"Cannot find path '{text}' because it does not exist.", "PathNotFound,Microsoft.PowerShell.Commands.GetContentCommand")
    if entry.directory:
        raise pw.ScriptError(f"Get-Content : Unable to get content because it is a directory: '{text}'.", "GetContentReaderUnauthorizedAccessError")
    if raw:
        return [entry.content] if entry.content else []
    return entry.content.replace("\r\n", "\n").removesuffix("\n").split("\n") if entry.content else []


def _encoding(named):
    encoding = named.pop("encoding", None)
    if encoding is not None and str(encoding).lower() not in ("utf8", "ascii", "unicode", "default"):
        raise pw.ScriptError(f"Cannot convert value \"{encoding}\" to type \"Microsoft.PowerShell.Commands.FileSystemCmdletProviderEncoding\".", "InvalidCastException")


def _write(it, cmdlet, named, positional, append):
    _encoding(named)
    value = named.pop("value", None)
    text = _path(it, cmdlet, named, positional)
    key, files = _key(text), it.lab.server.files
    parent = _parent(key)
    if parent is None or not _is_folder(it, parent):
        return _fail(it, f"Could not find a part of the path '{text}'.", "System.IO.DirectoryNotFoundException")
    _check_access(it, text, key)
    if _is_folder(it, key):
        raise pw.ScriptError(f"Access to the path '{text}' is denied.", "UnauthorizedAccessException", "System.UnauthorizedAccessException")
    # Each value goes out as a line (CRLF on Windows).
    lines = "".join(pw.as_text(v) + "\r\n" for v in pw.as_items(value))
    entry = files.get(key)
    if entry is None:
        files[key] = LabFile(text, content=lines)
    else:
        entry.content = entry.content + lines if append else lines
    return []


def set_content(it, named, positional, _input):
    return _write(it, "Set-Content", named, positional, append=False)


def add_content(it, named, positional, _input):
    return _write(it, "Add-Content", named, positional, append=True)


def remove_item(it, named, positional, _input):
    text, key, entry = _read(it, "Remove-Item", named, positional)
    files = it.lab.server.files
    if key in BUILT_IN_FOLDERS:
        raise pw.ScriptError(f"Remove-Item: the lab does not remove '{text}'.", "NotSupported")
    if entry is None:
        return _fail(it, f"Cannot find path '{text}' because it does not exist.", "PathNotFound,Microsoft.PowerShell.Commands.RemoveItemCommand")
    if entry.directory and any(k.startswith(key + "\\") for k in files):
        raise pw.ScriptError(f"The item at {text} has children and the Recurse parameter was not specified.", "RemoveItemUnauthorizedAccessError")
    del files[key]
    return []


def _acl_object(directory, identities, protected):
    rules = [_rule_object(who, "FullControl", "ContainerInherit, ObjectInherit" if directory else "None", "None", "Allow") for who in identities]
    return pw.PSObj(DIRECTORY_SECURITY if directory else FILE_SECURITY, Access=rules, AreAccessRulesProtected=protected)


def _rule_object(who, rights, inheritance, propagation, kind):
    return pw.PSObj(
        ACCESS_RULE,
        IdentityReference=pw.PSObj("System.Security.Principal.NTAccount", Value=who),
        FileSystemRights=rights,
        InheritanceFlags=inheritance,
        PropagationFlags=propagation,
        AccessControlType=kind,
        IsInherited=False,
    )


def get_acl(it, named, positional, _input):
    text, key, entry = _read(it, "Get-Acl", named, positional)
    if not _exists(it, key):
        return _fail(it, f"Cannot find path '{text}' because it does not exist.", "GetAcl_PathNotFound_Exception,Microsoft.PowerShell.Commands.GetAclCommand")
    if entry is None or entry.acl is None:
        # Lab assumption: what C:\ProgramData gives what is made in it.
        return [_acl_object(_is_folder(it, key), ["NT AUTHORITY\\SYSTEM", ADMINISTRATORS, "BUILTIN\\Users", "CREATOR OWNER"], False)]
    return [_acl_object(entry.directory, entry.acl, entry.protected)]


def set_acl(it, named, positional, _input):
    acl = named.pop("aclobject", None)
    text, key, entry = _read(it, "Set-Acl", named, positional)
    if entry is None:
        if not _exists(it, key):
            return _fail(it, f"Cannot find path '{text}' because it does not exist.", "SetAcl_PathNotFound_Exception,Microsoft.PowerShell.Commands.SetAclCommand")
        raise pw.ScriptError(f"Set-Acl: the lab does not change the ACL of '{text}'.", "NotSupported")
    acl = acl[0] if isinstance(acl, list) and len(acl) == 1 else acl
    wanted = DIRECTORY_SECURITY if entry.directory else FILE_SECURITY
    if not isinstance(acl, pw.PSObj) or acl.type_name != wanted:
        raise pw.ScriptError(f"Set-Acl: the -AclObject of '{text}' must be a {wanted}.", "SetAcl_InvalidAclObject")
    if any(str(rule["AccessControlType"]).lower() != "allow" for rule in acl["Access"]):
        # Windows lets a Deny rule win over an Allow one; the lab models Allow rules only, and
        # would otherwise let in an account a real server keeps out.
        raise pw.ScriptError(f"Set-Acl: the lab does not simulate Deny rules (the ACL of '{text}').", "NotSupported")
    entry.acl = [rule["IdentityReference"]["Value"] for rule in acl["Access"]]
    entry.protected = bool(acl["AreAccessRulesProtected"])
    return []


# ---------------------------------------------------------------------- .NET objects


def new_object(type_name, args):
    """The objects ``New-Object`` makes for the state backend's ACL; None for another type."""
    if type_name == DIRECTORY_SECURITY:
        if args:
            raise pw.ScriptError("New-Object: the lab's DirectorySecurity takes no arguments.", "ConstructorNotFound")
        return pw.PSObj(DIRECTORY_SECURITY, Access=[], AreAccessRulesProtected=False)
    if type_name != ACCESS_RULE:
        return None
    if len(args) != 5 or not all(isinstance(a, str) for a in args):
        raise pw.ScriptError(
            "New-Object: the lab's FileSystemAccessRule takes five strings: identity, rights, inheritance flags, propagation flags, Allow or Deny.",
            "ConstructorNotFound",
        )
    who, rights, inheritance, propagation, kind = args
    _flags("FileSystemRights", rights, RIGHTS)
    _flags("InheritanceFlags", inheritance, INHERITANCE)
    _flags("PropagationFlags", propagation, PROPAGATION)
    _flags("AccessControlType", kind, ("Allow", "Deny"), single=True)
    return _rule_object(who, rights, inheritance, propagation, kind)


def _flags(enum, text, members, single=False):
    parts = [p.strip() for p in text.split(",")]
    if (single and len(parts) != 1) or any(p.lower() not in {m.lower() for m in members} for p in parts):
        raise pw.ScriptError(
            f"Cannot convert value \"{text}\" to type \"System.Security.AccessControl.{enum}\". The possible enumeration values are \"{', '.join(members)}\".",
            "InvalidCastException",
        )


def call_method(it, target, name, args):
    """A method of an ACL object (``SetAccessRuleProtection``, ``AddAccessRule``); NotImplemented otherwise."""
    if target.type_name not in (DIRECTORY_SECURITY, FILE_SECURITY):
        return NotImplemented
    if name == "setaccessruleprotection" and len(args) == 2 and all(isinstance(a, bool) for a in args):
        target["AreAccessRulesProtected"] = args[0]
        if args[0] and not args[1]:
            target["Access"] = [r for r in target["Access"] if not r["IsInherited"]]
        return None
    if name == "addaccessrule" and len(args) == 1 and isinstance(args[0], pw.PSObj) and args[0].type_name == ACCESS_RULE:
        target["Access"] = [*target["Access"], args[0]]
        return None
    return NotImplemented


def call_static(it, type_name, name, args):
    """``[System.Security.Principal.WindowsIdentity]::GetCurrent()``; NotImplemented otherwise."""
    if type_name.lower() == WINDOWS_IDENTITY.lower() and name == "getcurrent" and not args:
        return pw.PSObj(WINDOWS_IDENTITY, Name=identity(it), AuthenticationType="Kerberos")
    return NotImplemented


def cmdlets():
    return (
        pw.Cmdlet("Test-Path", ("Path", "LiteralPath", "PathType"), run=test_path, reads_only=True),
        pw.Cmdlet("New-Item", ("Path", "ItemType", "Value"), ("Force",), run=new_item),
        pw.Cmdlet("Get-Content", ("Path", "LiteralPath", "Encoding"), ("Raw",), run=get_content, reads_only=True),
        pw.Cmdlet("Set-Content", ("Path", "LiteralPath", "Value", "Encoding"), run=set_content),
        pw.Cmdlet("Add-Content", ("Path", "LiteralPath", "Value", "Encoding"), run=add_content),
        pw.Cmdlet("Remove-Item", ("Path", "LiteralPath"), run=remove_item),
        pw.Cmdlet("Get-Acl", ("Path", "LiteralPath"), run=get_acl, reads_only=True),
        pw.Cmdlet("Set-Acl", ("Path", "LiteralPath", "AclObject"), run=set_acl),
    )
