"""The ``server`` state backend: the lock and the journal in a folder of the Entra Connect server.

Every apply on a server goes through that server, so the server is the one place
they all share: an engineer's workstation and a pipeline's runner see the same lock,
and any machine can resume an apply another started. The files are read and
written through the provider's own PowerShell session, with the file system
cmdlets of Windows PowerShell 5.1 (New-Item, Add-Content, Get-Content,
Set-Content, Remove-Item, Get-Acl, Set-Acl), never a share or a second protocol.

* The folder (default ``C:\\ProgramData\\syncprep\\state``) is created with an ACL of
  its own, protected from inheritance: full control for the account syncprep runs
  as and for ``BUILTIN\\Administrators``; the ACL is read back with ``Get-Acl`` on
  every use, and a folder whose ACL names anyone else is refused.
* The lock is ``<slug>.lock``, created by ``New-Item -ItemType File`` (which
  refuses a file that exists: of two applies, exactly one creates it) with the
  holder's record as its content.
* The journal is ``<slug>.journal``, one JSON line per ``Add-Content``. The
  backend's guarantee: Add-Content has closed the file when the script returns, so
  the line is in the server's file system, whatever becomes of the machine that
  runs syncprep (NTFS keeps it across a crash of that process; a power loss of the
  server itself is not covered, nor is the rest of the server's state). Each
  append first checks that the lock is still this apply's, so an apply whose lock
  was force-unlocked stops at its next step instead of writing on.
* Abandoned: as for ``local`` (:mod:`reconciler.state`): a holder on the same host
  whose process is gone; ``apply --resume`` takes it over under a guard file made
  with ``New-Item`` (one taker at a time), anything else needs ``force-unlock``.
"""

from __future__ import annotations

import json

from reconciler.errors import ProviderError, ReconcilerError
from reconciler.state import LockedError, StateBackend, held_error, holder_record, may_take_over
from providers.entraconnect.scripts import quote

DEFAULT_FOLDER = "C:\\ProgramData\\syncprep\\state"
ADMINISTRATORS = "BUILTIN\\Administrators"
# Who may be in the folder's ACL besides the account syncprep runs as.
TRUSTED = {ADMINISTRATORS.lower(), "nt authority\\system"}
STOP = "$ErrorActionPreference = 'Stop'"


def ensure_folder(folder):
    return f"""{STOP}
$dir = {quote(folder)}
$me = [System.Security.Principal.WindowsIdentity]::GetCurrent().Name
if (-not (Test-Path -LiteralPath $dir -PathType Container)) {{
    $null = New-Item -ItemType Directory -Path $dir -Force
    $acl = New-Object -TypeName System.Security.AccessControl.DirectorySecurity
    $acl.SetAccessRuleProtection($true, $false)
    $acl.AddAccessRule((New-Object -TypeName System.Security.AccessControl.FileSystemAccessRule -ArgumentList $me, 'FullControl', 'ContainerInherit, ObjectInherit', 'None', 'Allow'))
    $acl.AddAccessRule((New-Object -TypeName System.Security.AccessControl.FileSystemAccessRule -ArgumentList {quote(ADMINISTRATORS)}, 'FullControl', 'ContainerInherit, ObjectInherit', 'None', 'Allow'))
    Set-Acl -LiteralPath $dir -AclObject $acl
}}
$acl = Get-Acl -LiteralPath $dir
[pscustomobject]@{{ Me = $me; Protected = $acl.AreAccessRulesProtected; Identities = @($acl.Access.IdentityReference.Value) }} | ConvertTo-Json -Compress"""


def take_lock(path, record):
    return f"""{STOP}
$held = $null
$taken = $false
try {{
    $null = New-Item -ItemType File -Path {quote(path)} -Value {quote(record)}
    $taken = $true
}} catch {{
    $held = Get-Content -LiteralPath {quote(path)} -Raw
}}
[pscustomobject]@{{ Taken = $taken; Held = $held }} | ConvertTo-Json -Compress"""


def take_over(path, dead_text, record, keep):
    """Replace the dead holder's lock by ours, under a guard file only one taker can make."""
    guard = path + ".takeover"
    return f"""{STOP}
$null = New-Item -ItemType File -Path {quote(guard)} -Value 'take-over'
$now = Get-Content -LiteralPath {quote(path)} -Raw
$taken = $false
if ($now -eq {quote(dead_text)}) {{
    Set-Content -LiteralPath {quote(keep)} -Value $now
    Set-Content -LiteralPath {quote(path)} -Value {quote(record)}
    $taken = $true
}}
Remove-Item -LiteralPath {quote(guard)}
[pscustomobject]@{{ Taken = $taken; Held = $now }} | ConvertTo-Json -Compress"""


def read_text(path):
    return f"""{STOP}
$text = $null
if (Test-Path -LiteralPath {quote(path)} -PathType Leaf) {{
    $text = Get-Content -LiteralPath {quote(path)} -Raw -Encoding UTF8
}}
[pscustomobject]@{{ Text = $text }} | ConvertTo-Json -Compress"""


def replace_if(path, expected, record):
    """Rewrite (``record``) or remove (None) the lock, only if it still reads ``expected``."""
    action = f"Set-Content -LiteralPath {quote(path)} -Value {quote(record)}" if record is not None else f"Remove-Item -LiteralPath {quote(path)}"
    return f"""{STOP}
$now = $null
if (Test-Path -LiteralPath {quote(path)} -PathType Leaf) {{
    $now = Get-Content -LiteralPath {quote(path)} -Raw
}}
$done = $false
if ($now -eq {quote(expected)}) {{
    {action}
    $done = $true
}}
[pscustomobject]@{{ Done = $done; Held = $now }} | ConvertTo-Json -Compress"""


def remove_guard(path):
    guard = path + ".takeover"
    return f"""{STOP}
if (Test-Path -LiteralPath {quote(guard)} -PathType Leaf) {{
    Remove-Item -LiteralPath {quote(guard)}
}}"""


def append(journal, line, lock=None, expected=None):
    fence = ""
    if lock is not None:
        fence = f"""$now = $null
if (Test-Path -LiteralPath {quote(lock)} -PathType Leaf) {{
    $now = Get-Content -LiteralPath {quote(lock)} -Raw
}}
if ($now -ne {quote(expected)}) {{
    Write-Error -Message 'the lock on the server is no longer this apply''s (force-unlocked?): the journal was not written'
}}
"""
    return f"""{STOP}
{fence}Add-Content -LiteralPath {quote(journal)} -Value {quote(line)} -Encoding UTF8"""


def _parse(text):
    try:
        held = json.loads(text) if text else None
    except json.JSONDecodeError:
        return None
    return held if isinstance(held, dict) else None


def _alive(held):
    from reconciler.journal import _alive as alive

    return alive(held)


class _ServerLock:
    def __init__(self, state, command, take_over_dead):
        self.state = state
        self.command = command
        self.take_over_dead = take_over_dead
        self.info = holder_record(command)
        self.id = self.info["id"]
        self.taken_over = None

    def __enter__(self):
        state = self.state
        state.ensure()
        text = json.dumps(self.info, sort_keys=True)
        answer = state.run(take_lock(state.lock_path, text), "take the lock")
        if answer.get("Taken"):
            state.held_text = text
            return self
        held_text = answer.get("Held") or ""
        held = _parse(held_text)
        if held is None:
            raise LockedError(f"the target is locked ({state.lock_path} on the server exists but cannot be read yet); try again, or force-unlock it")
        if not _alive(held) and may_take_over(self.take_over_dead, held):
            keep = f"{state.lock_path}.dead-{held.get('id')}"
            answer = state.run(take_over(state.lock_path, held_text, text, keep), "take over the lock")
            if not answer.get("Taken"):
                raise LockedError("another apply took over the same abandoned lock first; nothing was changed")
            state.held_text = _reread(state)
            self.taken_over = held
            return self
        gone = None if _alive(held) else f"pid {held.get('pid')} on {held.get('host')}, this host: that process is gone"
        raise held_error(held, state.where(), gone)

    def record_plan(self, plan_hash):
        state = self.state
        text = json.dumps({**self.info, "plan": plan_hash}, sort_keys=True)
        answer = state.run(replace_if(state.lock_path, state.held_text, text), "record the plan in the lock")
        if answer.get("Done"):
            # Set-Content ends the text with a line break; Get-Content -Raw gives it back.
            state.held_text = _reread(state)

    def __exit__(self, *exc):
        state = self.state
        try:
            state.run(replace_if(state.lock_path, state.held_text, None), "release the lock")
        finally:
            state.held_text = None
        return False


def _reread(state):
    return state.run(read_text(state.lock_path), "read the lock").get("Text") or ""


class ServerState(StateBackend):
    """``session``: the Entra Connect provider's :class:`PsrpSession` (anything with ``invoke``)."""

    name = "server"

    def __init__(self, session, slug, folder=None):
        self.session = session
        self.folder = (folder or DEFAULT_FOLDER).rstrip("\\")
        self.lock_path = f"{self.folder}\\{slug}.lock"
        self.journal_path = f"{self.folder}\\{slug}.journal"
        self.held_text = None
        self._ready = False

    def where(self):
        return f"{self.folder} on {getattr(self.session, 'host', 'the Entra Connect server')} (server)"

    def run(self, script, what):
        try:
            answer = self.session.invoke(script, f"state: {what}")
        except ProviderError as exc:
            raise ReconcilerError(f"the lock and journal on the server ({self.folder}): {what}: {exc.message}") from None
        return answer if isinstance(answer, dict) else {}

    def ensure(self):
        """The folder exists with our ACL, read back; refused when the ACL names anyone else."""
        if self._ready:
            return
        answer = self.run(ensure_folder(self.folder), "prepare the folder")
        me = str(answer.get("Me") or "").lower()
        names = answer.get("Identities")
        names = [names] if isinstance(names, str) else names or []
        others = sorted({n for n in names if isinstance(n, str) and n.lower() not in TRUSTED | {me}})
        if not answer.get("Protected") or others:
            why = f"its ACL also lets in {', '.join(others)}" if others else "its ACL inherits from the folder above"
            raise ReconcilerError(
                f"the state folder {self.folder} on the server is not syncprep's own ({why}): remove it, or set its ACL to "
                f"{answer.get('Me')} and {ADMINISTRATORS} only (protected); nothing was changed"
            )
        self._ready = True

    def lock(self, command, take_over_dead=False):
        return _ServerLock(self, command, take_over_dead)

    def read_lock(self):
        text = self.run(read_text(self.lock_path), "read the lock").get("Text")
        return _parse(text) if text else None

    def force_unlock(self, lock_id):
        text = self.run(read_text(self.lock_path), "read the lock").get("Text")
        held = _parse(text) if text else None
        if held is None:
            raise ReconcilerError("no lock is held on this target")
        if held.get("id") != lock_id:
            raise ReconcilerError(f"the lock's id is {held.get('id')}, not {lock_id}: nothing released")
        answer = self.run(replace_if(self.lock_path, text, None), "release the lock")
        if not answer.get("Done"):
            raise ReconcilerError("the lock changed while it was being released; nothing released: look again")
        self.run(remove_guard(self.lock_path), "remove a take-over guard")
        return held

    def append(self, record):
        self.ensure()
        line = json.dumps(record, sort_keys=True)
        if self.held_text is not None:
            self.run(append(self.journal_path, line, self.lock_path, self.held_text), "append to the journal")
        else:
            self.run(append(self.journal_path, line), "append to the journal")

    def read_journal(self):
        return self.run(read_text(self.journal_path), "read the journal").get("Text") or ""
