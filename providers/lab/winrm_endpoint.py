"""A WinRM endpoint on loopback that serves the lab's Entra Connect server over PSRP.

It speaks just enough WS-Management (MS-WSMV) for pypsrp's ``RunspacePool`` and
``PowerShell``: Create, Command, Send, Receive, Signal and Delete on a PowerShell
shell, each answered with ``wsa:RelatesTo`` set to the request's MessageID, over
plain HTTP with Basic authentication (the client uses ``auth="basic", ssl=False,
encryption="never"``; domain-facts C2, E6). The PSRP layer (fragments, runspace
pool and pipeline state machines, CLIXML) is psrpcore's ``ServerRunspacePool`` and
``ServerPipeline``.

Scripts are run by :mod:`providers.lab.pwsh_interpreter`, which understands exactly
the PowerShell the Entra Connect provider generates and acts on the lab through
:meth:`LabHost.session` only. A script runs on a worker thread; a Receive waits a
little for it and answers ``Running`` with what is there so far, then ``Done``.
"""

from __future__ import annotations

import base64
import binascii
import collections
import hmac
import http.server
import threading
import uuid
import xml.etree.ElementTree as ET

from providers.lab.pwsh_interpreter import Interpreter, ScriptError

NS = {
    "s": "http://www.w3.org/2003/05/soap-envelope",
    "wsa": "http://schemas.xmlsoap.org/ws/2004/08/addressing",
    "wsman": "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd",
    "wsmanfault": "http://schemas.microsoft.com/wbem/wsman/1/wsmanfault",
    "wst": "http://schemas.xmlsoap.org/ws/2004/09/transfer",
    "rsp": "http://schemas.microsoft.com/wbem/wsman/1/windows/shell",
    "pwsh": "http://schemas.microsoft.com/powershell",
}
_WSMAN_SHELL = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell"
_TRANSFER = "http://schemas.xmlsoap.org/ws/2004/09/transfer"
ACTIONS = {
    f"{_TRANSFER}/Create": "create",
    f"{_TRANSFER}/Delete": "delete",
    f"{_WSMAN_SHELL}/Command": "command",
    f"{_WSMAN_SHELL}/Send": "send",
    f"{_WSMAN_SHELL}/Receive": "receive",
    f"{_WSMAN_SHELL}/Signal": "signal",
}
RESPONSE_ACTIONS = {
    "create": f"{_TRANSFER}/CreateResponse",
    "delete": f"{_TRANSFER}/DeleteResponse",
    "command": f"{_WSMAN_SHELL}/CommandResponse",
    "send": f"{_WSMAN_SHELL}/SendResponse",
    "receive": f"{_WSMAN_SHELL}/ReceiveResponse",
    "signal": f"{_WSMAN_SHELL}/SignalResponse",
}
_DONE = f"{_WSMAN_SHELL}/CommandState/Done"
_RUNNING = f"{_WSMAN_SHELL}/CommandState/Running"
# How long a Receive waits for a running script before answering "Running" with nothing new.
RECEIVE_WAIT_SECONDS = 0.5
# ERROR_WSMAN_INVALID_SELECTORS: the shell named is not (or no longer) there.
_UNKNOWN_SHELL = 2150858843

for _prefix, _uri in NS.items():
    ET.register_namespace(_prefix, _uri)


class _Fault(Exception):
    def __init__(self, code, reason):
        super().__init__(reason)
        self.code = code
        self.reason = reason


class _Shell:
    """One runspace pool: psrpcore state plus the payloads waiting for a Receive."""

    def __init__(self, shell_id):
        import psrpcore

        self.id = shell_id
        self.pool = psrpcore.ServerRunspacePool()
        self.lock = threading.Condition()
        self.outbox = {}  # pipeline id (or None) -> list of fragment bytes
        self.pipelines = {}  # pipeline id -> _Pipeline

    def feed(self, data, pipeline_id=None):
        """Give PSRP fragments to psrpcore and return the events they complete."""
        from psrpcore import PSRPPayload, StreamType

        self.pool.receive_data(PSRPPayload(data, StreamType.default, pipeline_id))
        events = []
        while True:
            event = self.pool.next_event()
            if event is None:
                break
            events.append(event)
        self.drain()
        return events

    def drain(self):
        while True:
            payload = self.pool.data_to_send()
            if payload is None:
                break
            self.outbox.setdefault(payload.pipeline_id, []).append(payload.data)
        self.lock.notify_all()

    def take(self, pipeline_id):
        return self.outbox.pop(pipeline_id, [])


class _Pipeline:
    def __init__(self, shell, server_pipeline):
        self.shell = shell
        self.pipeline = server_pipeline
        self.thread = None
        self.finished = False
        self.stopped = threading.Event()  # a Signal (ctrl_c / terminate) arrived


class WinRMEndpoint:
    """``with WinRMEndpoint(host, "admin", "secret") as (address, port): ...``

    ``host`` is a :class:`providers.lab.host.LabHost`; the endpoint touches the lab
    only through its sessions, so it can share the host with the Graph emulator.
    """

    def __init__(self, host, username, password, bind="127.0.0.1", port=0):
        self.host = host
        self.username = username
        self.password = password
        self._bind = (bind, port)
        self._server = None
        self._thread = None
        self._shells = {}
        self._shells_lock = threading.Lock()
        self.scripts = []  # every script received, in order (for tests and logs)
        self.receive_states = collections.Counter()  # "Running" / "Done" answers to pipeline Receives
        # Seconds a script waits before it runs (a slow server, for tests); a Signal in
        # that time stops it before it has changed anything.
        self.script_delay = 0.0

    # ------------------------------------------------------------------ lifecycle

    def start(self):
        endpoint = self

        class Handler(_Handler):
            owner = endpoint

        self._server = http.server.ThreadingHTTPServer(self._bind, Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="winrm-endpoint", daemon=True)
        self._thread.start()
        return self._server.server_address[:2]

    def stop(self):
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        for shell in list(self._shells.values()):
            for pipe in list(shell.pipelines.values()):
                if pipe.thread is not None:
                    pipe.thread.join(timeout=5)
        self._shells.clear()

    @property
    def address(self):
        return self._server.server_address[:2]

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # ------------------------------------------------------------------ authentication

    def authorised(self, header):
        if not header or not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return hmac.compare_digest(user, self.username) & hmac.compare_digest(password, self.password)

    # ------------------------------------------------------------------ WS-Man actions

    def handle(self, envelope):
        """Answer one SOAP request; returns the response envelope as bytes."""
        header = envelope.find("s:Header", NS)
        action_uri = header.findtext("wsa:Action", "", NS)
        message_id = header.findtext("wsa:MessageID", "", NS)
        action = ACTIONS.get(action_uri)
        body = envelope.find("s:Body", NS)
        try:
            if action is None:
                raise _Fault(2150858817, f"The WS-Management service does not support the action {action_uri}.")
            if action == "create":
                body_out = self._create(body)
            else:
                shell = self._shell(header)
                body_out = getattr(self, "_" + action)(shell, body)
        except _Fault as fault:
            return _fault_envelope(message_id, fault), 500
        return _envelope(RESPONSE_ACTIONS[action], message_id, body_out), 200

    def _shell(self, header):
        shell_id = None
        for selector in header.findall("wsman:SelectorSet/wsman:Selector", NS):
            if selector.get("Name") == "ShellId":
                shell_id = (selector.text or "").upper()
        with self._shells_lock:
            shell = self._shells.get(shell_id)
        if shell is None:
            raise _Fault(_UNKNOWN_SHELL, f"The request for the Windows Remote Shell with ShellId {shell_id} failed because the shell was not found on the server.")
        return shell

    def _create(self, body):
        shell_el = body.find("rsp:Shell", NS)
        if shell_el is None:
            raise _Fault(2150858817, "Create without a Shell")
        shell_id = (shell_el.get("ShellId") or str(uuid.uuid4())).upper()
        creation = shell_el.find("pwsh:creationXml", NS)
        if creation is None:
            raise _Fault(2150858817, "Create without creationXml: only PowerShell shells are served")
        shell = _Shell(shell_id)
        with shell.lock:
            shell.feed(base64.b64decode(creation.text or ""))
        with self._shells_lock:
            self._shells[shell_id] = shell
        out = ET.Element(f"{{{NS['rsp']}}}Shell")
        ET.SubElement(out, f"{{{NS['rsp']}}}ShellId").text = shell_id
        ET.SubElement(out, f"{{{NS['rsp']}}}ResourceUri").text = "http://schemas.microsoft.com/powershell/Microsoft.PowerShell"
        ET.SubElement(out, f"{{{NS['rsp']}}}State").text = "Connected"
        created = ET.Element(f"{{{NS['wst']}}}ResourceCreated")
        ET.SubElement(created, f"{{{NS['wsa']}}}Address").text = "http://127.0.0.1/wsman"
        params = ET.SubElement(created, f"{{{NS['wsa']}}}ReferenceParameters")
        ET.SubElement(params, f"{{{NS['wsman']}}}ResourceURI").text = "http://schemas.microsoft.com/powershell/Microsoft.PowerShell"
        selectors = ET.SubElement(params, f"{{{NS['wsman']}}}SelectorSet")
        ET.SubElement(selectors, f"{{{NS['wsman']}}}Selector", Name="ShellId").text = shell_id
        return [created, out]

    def _command(self, shell, body):
        import psrpcore

        line = body.find("rsp:CommandLine", NS)
        command_id = (line.get("CommandId") or str(uuid.uuid4())).upper()
        pipeline_id = uuid.UUID(command_id)
        arguments = line.findtext("rsp:Arguments", "", NS)
        with shell.lock:
            pipe = _Pipeline(shell, psrpcore.ServerPipeline(shell.pool, pipeline_id))
            shell.pipelines[pipeline_id] = pipe
            shell.feed(base64.b64decode(arguments), pipeline_id)
            self._maybe_start(pipe)
        response = ET.Element(f"{{{NS['rsp']}}}CommandResponse")
        ET.SubElement(response, f"{{{NS['rsp']}}}CommandId").text = command_id
        return [response]

    def _send(self, shell, body):
        for stream in body.findall("rsp:Send/rsp:Stream", NS):
            command_id = stream.get("CommandId")
            pipeline_id = uuid.UUID(command_id) if command_id else None
            with shell.lock:
                shell.feed(base64.b64decode(stream.text or ""), pipeline_id)
                pipe = shell.pipelines.get(pipeline_id)
                if pipe is not None:
                    self._maybe_start(pipe)
        return [ET.Element(f"{{{NS['rsp']}}}SendResponse")]

    def _maybe_start(self, pipe):
        # psrpcore sets the metadata once the whole CreatePipeline message has arrived.
        if pipe.thread is not None or pipe.pipeline.metadata is None:
            return
        pipe.pipeline.start()
        pipe.shell.drain()
        pipe.thread = threading.Thread(target=self._run, args=(pipe,), name="winrm-pipeline", daemon=True)
        pipe.thread.start()

    def _run(self, pipe):
        shell, pipeline = pipe.shell, pipe.pipeline
        commands = pipeline.metadata.commands
        sink = _Sink(shell, pipeline)
        if len(commands) != 1 or not commands[0].is_script:
            error = ScriptError("this endpoint runs one script per pipeline (PowerShell.add_script)")
        else:
            script = commands[0].command_text
            self.scripts.append(script)
            try:
                if pipe.stopped.wait(self.script_delay) if self.script_delay else False:
                    raise ScriptError("The pipeline has been stopped.", "PipelineStopped", "Management.Automation.PipelineStoppedException")
                Interpreter(self.host, sink, identity=self.username).run(script)
                error = None
            except ScriptError as exc:
                error = exc
            except Exception as exc:  # noqa: BLE001 - a bug here must still end the pipeline
                error = ScriptError(f"internal error in the lab's PowerShell: {type(exc).__name__}: {exc}", "InternalError")
        with shell.lock:
            if error is None:
                pipeline.complete()
            else:
                pipeline._change_state(_pipeline_failed(), error=sink.error_record(error))
            pipe.finished = True
            shell.drain()

    def _receive(self, shell, body):
        desired = body.find("rsp:Receive/rsp:DesiredStream", NS)
        command_id = desired.get("CommandId") if desired is not None else None
        pipeline_id = uuid.UUID(command_id) if command_id else None
        with shell.lock:
            pipe = shell.pipelines.get(pipeline_id) if pipeline_id else None
            if pipe is not None and not pipe.finished and not shell.outbox.get(pipeline_id):
                shell.lock.wait_for(lambda: pipe.finished or shell.outbox.get(pipeline_id), timeout=RECEIVE_WAIT_SECONDS)
            chunks = shell.take(pipeline_id)
            done = pipe is not None and pipe.finished and not shell.outbox.get(pipeline_id)
        response = ET.Element(f"{{{NS['rsp']}}}ReceiveResponse")
        for chunk in chunks:
            stream = ET.SubElement(response, f"{{{NS['rsp']}}}Stream", Name="stdout")
            if command_id:
                stream.set("CommandId", command_id)
            stream.text = base64.b64encode(chunk).decode("ascii")
        if command_id:
            self.receive_states["Done" if done else "Running"] += 1
            state = ET.SubElement(response, f"{{{NS['rsp']}}}CommandState", CommandId=command_id, State=_DONE if done else _RUNNING)
            if done:
                ET.SubElement(state, f"{{{NS['rsp']}}}ExitCode").text = "0"
        return [response]

    def _signal(self, shell, body):
        signal = body.find("rsp:Signal", NS)
        command_id = signal.get("CommandId") if signal is not None else None
        if command_id:
            pipeline_id = uuid.UUID(command_id)
            with shell.lock:
                pipe = shell.pipelines.get(pipeline_id)
            if pipe is not None:
                # Terminate after completion, or ctrl_c: the interpreter is short-lived, so wait for it
                # (a script still waiting out script_delay stops at once, having done nothing).
                pipe.stopped.set()
                if pipe.thread is not None:
                    pipe.thread.join(timeout=30)
                with shell.lock:
                    try:
                        pipe.pipeline.close()
                    except Exception:  # noqa: BLE001 - closing a pipeline twice is harmless
                        pass
                    shell.pipelines.pop(pipeline_id, None)
                    shell.outbox.pop(pipeline_id, None)
        return [ET.Element(f"{{{NS['rsp']}}}SignalResponse")]

    def _delete(self, shell, body):
        with self._shells_lock:
            self._shells.pop(shell.id, None)
        return []


def _pipeline_failed():
    from psrpcore.types import PSInvocationState

    return PSInvocationState.Failed


class _Sink:
    """Where the interpreter writes: output objects, non-terminating error records."""

    def __init__(self, shell, pipeline):
        self.shell = shell
        self.pipeline = pipeline

    def output(self, value):
        with self.shell.lock:
            self.pipeline.write_output(value)
            self.shell.drain()

    def error(self, message, error_id="Microsoft.PowerShell.Commands.WriteErrorException"):
        from psrpcore.types import ErrorCategoryInfo, NETException

        with self.shell.lock:
            self.pipeline.write_error(
                NETException(Message=message),
                ErrorCategoryInfo(Reason="WriteErrorException"),
                fully_qualified_error_id=error_id,
            )
            self.shell.drain()

    def error_record(self, error):
        from psrpcore.types import ErrorCategory, ErrorCategoryInfo, ErrorRecord, NETException

        exception = NETException(Message=str(error))
        exception.PSObject.type_names = [
            f"System.{error.exception_type}",
            "System.Exception",
            "System.Object",
        ]
        return ErrorRecord(
            Exception=exception,
            CategoryInfo=ErrorCategoryInfo(Category=ErrorCategory.InvalidOperation, Reason=error.exception_type),
            FullyQualifiedErrorId=error.error_id,
        )


class _Handler(http.server.BaseHTTPRequestHandler):
    owner: WinRMEndpoint
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: without this, Nagle and delayed ACKs add 40 ms a request.
    disable_nagle_algorithm = True

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass

    def do_POST(self):  # noqa: N802 - http.server's naming
        length = int(self.headers.get("Content-Length") or 0)
        data = self.rfile.read(length) if length else b""
        if not self.owner.authorised(self.headers.get("Authorization")):
            self._reply(401, b"", {"WWW-Authenticate": 'Basic realm="WSMAN"'})
            return
        if self.path.rstrip("/") != "/wsman":
            self._reply(404, b"")
            return
        if not data:
            self._reply(200, b"")
            return
        try:
            envelope = ET.fromstring(data)
        except ET.ParseError:
            self._reply(400, b"")
            return
        payload, status = self.owner.handle(envelope)
        self._reply(status, payload, {"Content-Type": "application/soap+xml;charset=UTF-8"})

    def _reply(self, status, payload, headers=None):
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if payload:
            self.wfile.write(payload)


def _envelope(action, relates_to, body_children):
    envelope = ET.Element(f"{{{NS['s']}}}Envelope")
    header = ET.SubElement(envelope, f"{{{NS['s']}}}Header")
    ET.SubElement(header, f"{{{NS['wsa']}}}Action").text = action
    ET.SubElement(header, f"{{{NS['wsa']}}}MessageID").text = f"uuid:{str(uuid.uuid4()).upper()}"
    ET.SubElement(header, f"{{{NS['wsa']}}}RelatesTo").text = relates_to
    body = ET.SubElement(envelope, f"{{{NS['s']}}}Body")
    for child in body_children:
        body.append(child)
    return ET.tostring(envelope, encoding="utf-8", xml_declaration=False)


def _fault_envelope(relates_to, fault):
    s, wsmanfault = NS["s"], NS["wsmanfault"]
    detail_fault = ET.Element(f"{{{s}}}Fault")
    code = ET.SubElement(detail_fault, f"{{{s}}}Code")
    ET.SubElement(code, f"{{{s}}}Value").text = "s:Receiver"
    reason = ET.SubElement(detail_fault, f"{{{s}}}Reason")
    ET.SubElement(reason, f"{{{s}}}Text").text = fault.reason
    detail = ET.SubElement(detail_fault, f"{{{s}}}Detail")
    wsman_fault = ET.SubElement(detail, f"{{{wsmanfault}}}WSManFault", Code=str(fault.code), Machine="127.0.0.1")
    ET.SubElement(wsman_fault, f"{{{wsmanfault}}}Message").text = fault.reason
    return _envelope("http://schemas.dmtf.org/wbem/wsman/1/wsman/fault", relates_to, [detail_fault])
