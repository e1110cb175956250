"""Desired state: what a desired-state TOML file says, as frozen values.

These classes know nothing of TOML; :mod:`reconciler.loader` structures files into
them and reports errors. Field names are the TOML keys.
"""

from __future__ import annotations

import enum
import re
from typing import Optional

from attrs import field

from reconciler.classes import frozen
from reconciler.model import AttributeFlow, FlowType, LinkType, MergeType


#: The variables a desired-state file may name for credentials: these, or these with a
#: suffix (``SYNCPREP_GRAPH_TOKEN_PROD``). Never any other variable: a file naming
#: ``AZURE_CLIENT_SECRET`` or ``GITHUB_TOKEN`` would send that secret to the endpoint.
CREDENTIAL_VARIABLES = {
    "token_env": "SYNCPREP_GRAPH_TOKEN",
    "username_env": "SYNCPREP_WINRM_USERNAME",
    "password_env": "SYNCPREP_WINRM_PASSWORD",
}


#: How syncprep signs in to Microsoft Graph (``[target.graph] auth``).
GRAPH_AUTHS = ("environment", "workload-identity", "azure-cli", "managed-identity", "device-code", "token-env")
#: Where device-code sign-in keeps its tokens between commands (``[target.graph] token_cache``).
TOKEN_CACHES = ("encrypted", "unencrypted", "memory")
#: How syncprep signs in to WinRM (``[target.entra_connect] auth``).
WINRM_AUTHS = ("negotiate", "kerberos", "ntlm", "credssp", "certificate", "basic")
#: The WinRM auths that build a Kerberos/NTLM SPN (``negotiate_service``, ``negotiate_hostname_override``).
SPN_AUTHS = ("negotiate", "kerberos", "ntlm")


def credential_variable_problem(key, name):
    """None if ``name`` may hold the credential ``key`` names, else why not."""
    return variable_name_problem(CREDENTIAL_VARIABLES[key], name)


def variable_name_problem(base, name):
    """None if ``name`` is ``base`` or ``base_<SUFFIX>``, else why not, without ``name`` itself:
    a value that is not such a name may be the secret, pasted here by mistake, and the error line
    ends up in CI logs that everyone reads."""
    if isinstance(name, str) and re.fullmatch(rf"{base}(?:_[A-Z0-9]+)*", name):
        return None
    if isinstance(name, str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        return f"must be {base} or {base}_<SUFFIX> (upper case), not another variable: credentials come only from syncprep's own variables"
    return f"must be {base} or {base}_<SUFFIX> (upper case); the value is not a variable name and is not shown (if it is the secret itself, put it in {base} instead)"


class RuleKind(enum.Enum):
    #: An out-of-box rule: only its enabled state is managed.
    STOCK = "stock"
    #: The article's Solution 1: the stock rule of this name is replaced by an
    #: editable copy (same name), its listed flows changed, at ``precedence``.
    REPLACEMENT = "replacement"
    #: A rule of our own, written out in full.
    CUSTOM = "custom"


class TargetKind(enum.Enum):
    LAB = "lab"
    REMOTE = "remote"


@frozen
class FlowSpec:
    destination: str
    flow_type: FlowType
    source: Optional[str] = None
    expression: Optional[str] = None
    apply_once: bool = False
    merge_type: MergeType = MergeType.UPDATE
    # The attributes an Expression flow reads (the Rules Editor's source list).
    sources: tuple[str, ...] = ()

    def to_flow(self):
        sources = tuple(self.sources)
        return AttributeFlow(
            destination=self.destination,
            flow_type=self.flow_type,
            source=sources[0] if sources else self.source,
            expression=self.expression,
            execute_once=self.apply_once,
            merge_type=self.merge_type,
            other_sources=sources[1:],
        )


@frozen
class ScopeConditionSpec:
    attribute: str
    operator: str
    value: str = ""


@frozen
class RuleSpec:
    name: str
    kind: RuleKind = RuleKind.CUSTOM
    enabled: bool = True
    precedence: Optional[int] = None
    flows: tuple[FlowSpec, ...] = ()
    # Custom rules only.
    direction: str = "Inbound"
    source_object_type: Optional[str] = None
    target_object_type: str = "person"
    link_type: LinkType = LinkType.JOIN
    connector: Optional[str] = None  # connector name; default: the only AD connector
    description: str = ""
    scope: tuple[tuple[ScopeConditionSpec, ...], ...] = ()


@frozen
class SchedulerSpec:
    #: Whether the scheduler runs when the apply is over.
    sync_cycle_enabled: bool = True


@frozen
class LicenseSpec:
    sku: str  # part number, e.g. ENTERPRISEPACK
    users: tuple[str, ...] = ()
    ous: tuple[str, ...] = ()
    #: Remove and assign again a licence that produced no mailbox (the article's last step).
    relicense_without_mailbox: bool = True
    #: A licensing group (display name or object id) that carries ``sku``: the users are added
    #: to it instead of being given the licence directly.
    group: Optional[str] = None
    #: A wave: a CSV file of the users (a migration tool's batch export), relative to the
    #: desired-state file; ``users_column`` names the column, else it is found by header.
    users_file: Optional[str] = None
    users_column: Optional[str] = None
    #: Set by the loader, never from TOML: the UPNs read from ``users_file``, and where the
    #: entry is (``file:line: licenses[i]``) for messages that name it.
    file_users: tuple[str, ...] = ()
    place: str = field(default="", eq=False)

    @property
    def wave(self):
        """The wave this entry is (its file's name without the extension), or ""."""
        if not self.users_file:
            return ""
        name = self.users_file.replace("\\", "/").rsplit("/", 1)[-1]
        return name.rsplit(".", 1)[0] if "." in name else name

    @property
    def all_users(self):
        return (*self.users, *self.file_users)

    @property
    def label(self):
        """What names this entry in step ids and reports: the SKU, with its group and wave."""
        parts = [self.sku]
        if self.group:
            parts.append(f"group:{self.group}")
        if self.wave:
            parts.append(self.wave)
        return "/".join(parts)


@frozen
class ScopeSpec:
    """The AD connector's OU filtering (Domain/OU Filtering in the wizard)."""

    included: tuple[str, ...] = ()
    excluded: tuple[str, ...] = ()


@frozen
class ExportSpec:
    #: Attributes the Entra ID connector must not export (the wizard's attribute filter).
    excluded_attributes: tuple[str, ...] = ()
    #: The export deletion threshold (domain-facts A10). Unset: the server's default, 500,
    #: is what plan and drift compare with (they report another value; they do not change it).
    deletion_threshold: Optional[int] = None


@frozen
class PurgeSpec:
    """Synced users to hard-delete from the recycle bin: Solution 2. Irreversible.

    Users named here that are still active are first taken out of sync (their OU
    out of scope) so that they land in the recycle bin; that happens only while the
    plan also starts excluding an attribute from export, which is what the purge
    is for. Cloud-only users are never purged.
    """

    users: tuple[str, ...] = ()
    ous: tuple[str, ...] = ()
    #: Refuse a plan that would purge more than this many users.
    max_count: Optional[int] = None
    #: Purging more than this share of the synced users needs --force (as octoDNS's deletes).
    max_percent: float = 30.0
    #: Users (by UPN) purged even though the purge destroys their Exchange Online mailbox or
    #: their cloud GUID is already clear: without their name here they are left out.
    acknowledge_loss: tuple[str, ...] = ()


@frozen
class GraphTargetSpec:
    """Where and how to reach Microsoft Graph. Secrets never live here (see ``auth``)."""

    #: global, usgov, usgov-dod or china
    cloud: str = "global"
    #: An explicit endpoint such as ``http://127.0.0.1:8443/v1.0``; plain http only on loopback.
    endpoint: Optional[str] = None
    tenant_id: Optional[str] = None
    #: environment (a client secret or certificate), workload-identity (federation, e.g. GitHub
    #: Actions OIDC), azure-cli (reuses ``az login``), managed-identity, device-code, token-env
    auth: str = "environment"
    #: For auth = token-env: the environment variable holding a bearer token.
    token_env: str = "SYNCPREP_GRAPH_TOKEN"
    client_id: Optional[str] = None
    #: For auth = device-code: where the sign-in is kept between commands. "encrypted" (the
    #: default: the OS's protection), "unencrypted" (opt-in: a file readable only by you when
    #: the OS cannot encrypt it) or "memory" (asked again on every command).
    token_cache: Optional[str] = None
    #: Minutes after licensing during which a missing mailbox counts as pending.
    mailbox_pending_minutes: int = 60
    #: Seconds between mailbox checks while waiting for new mailboxes.
    poll_seconds: float = 60.0


@frozen
class EntraConnectTargetSpec:
    """Where and how to reach the Entra Connect server over WinRM. No secrets here."""

    host: str
    port: Optional[int] = None
    ssl: bool = True
    #: negotiate, kerberos, ntlm, credssp, certificate, basic
    auth: str = "negotiate"
    cert_validation: bool = True
    username_env: str = "SYNCPREP_WINRM_USERNAME"
    password_env: str = "SYNCPREP_WINRM_PASSWORD"
    allow_staging: bool = False
    #: For auth = certificate: paths of the client certificate and its key (PEM). Paths, not secrets.
    certificate_pem: Optional[str] = None
    certificate_key_pem: Optional[str] = None
    #: The Entra ID account the export deletion threshold cmdlets name (-AADUserName).
    aad_username: Optional[str] = None
    #: Seconds between checks while a sync cycle runs.
    poll_seconds: float = 10.0
    #: Seconds one script may run before it is stopped (its outcome is then unknown).
    script_timeout_seconds: float = 900.0
    #: Seconds to wait for the TCP connection (pypsrp's connection_timeout).
    connection_timeout_seconds: float = 30.0
    #: Seconds one WS-Man operation may take at the server (pypsrp's operation_timeout); the
    #: client waits 10 s more for the answer.
    operation_timeout_seconds: int = 60
    #: negotiate, kerberos, ntlm: the service and host of the SPN (pypsrp asks for
    #: ``host/<host>`` by default), for a server reached by an alias or an SPN registered as HTTP/...
    negotiate_service: Optional[str] = None
    negotiate_hostname_override: Optional[str] = None


@frozen
class TargetSpec:
    kind: TargetKind = TargetKind.LAB
    #: The lab file (lab targets); relative paths are relative to the working directory.
    lab: Optional[str] = None
    #: Lab only (a remote target says it in [target.entra_connect]): change a server in staging mode.
    allow_staging: bool = False
    graph: Optional[GraphTargetSpec] = None
    entra_connect: Optional[EntraConnectTargetSpec] = None


class StateBackendKind(enum.Enum):
    LOCAL = "local"
    SERVER = "server"
    AZUREBLOB = "azureblob"


@frozen
class StateSpec:
    """Where the target's lock and journal live (see :mod:`reconciler.state`). No secrets here."""

    #: local, server or azureblob; unset: local for the lab, server for a remote target.
    backend: Optional[StateBackendKind] = None
    #: local: a folder of this machine (default: next to the lab file, or .syncprep);
    #: server: a folder of the Entra Connect server (default C:\ProgramData\syncprep\state).
    folder: Optional[str] = None
    #: azureblob: the storage account's blob endpoint, e.g. https://contosostate.blob.core.windows.net
    account_url: Optional[str] = None
    #: azureblob: the container (created when missing).
    container: Optional[str] = None
    #: azureblob: default (DefaultAzureCredential), environment, managed-identity,
    #: workload-identity, azure-cli, or token-env (a bearer token in SYNCPREP_STORAGE_TOKEN).
    auth: str = "default"
    token_env: str = "SYNCPREP_STORAGE_TOKEN"
    client_id: Optional[str] = None
    #: azureblob: the lease's length in seconds (15 to 60); it is renewed at a third of that.
    lease_seconds: int = 60


@frozen
class DesiredState:
    target: TargetSpec = TargetSpec()
    state: StateSpec = StateSpec()
    scheduler: SchedulerSpec = SchedulerSpec()
    rules: tuple[RuleSpec, ...] = ()
    licenses: tuple[LicenseSpec, ...] = ()
    scope: Optional[ScopeSpec] = None
    export: Optional[ExportSpec] = None
    purge: Optional[PurgeSpec] = None
    #: The file it came from (for messages); not part of the state.
    source: str = field(default="<memory>", eq=False)
    #: SHA-256 of the bytes it was read from: what binds a saved plan to this file.
    sha256: str = field(default="", eq=False)
    #: The other files it reads (wave CSV files), as (path as written, SHA-256): a saved plan
    #: is bound to them too.
    files: tuple[tuple[str, str], ...] = field(default=(), eq=False)
