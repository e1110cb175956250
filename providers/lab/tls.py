"""HTTPS and HTTP/2 for the served lab's Graph endpoint (``lab serve --tls``).

Microsoft Graph is HTTPS and speaks HTTP/2 with clients that offer it (ALPN), as the
Graph provider's httpx client does; so does the served lab with ``--tls``: a
self-signed certificate for 127.0.0.1 (the client trusts it through ``--ca-bundle``
/ ``SYNCPREP_CA_BUNDLE``), then HTTP/2 (h2, sans-IO) or HTTP/1.1 as the client chose.
Each HTTP/2 request goes to the same :meth:`GraphEmulator.handle` as an HTTP/1.1 one.
"""

from __future__ import annotations

import datetime as dt
import email.message
import json
import os
import ssl
import uuid

from reconciler.files import PRIVATE
from reconciler.redact import quiet_header_blocks

quiet_header_blocks()

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def make_certificate(folder):
    """A self-signed certificate and key for 127.0.0.1 in ``folder``: (cert path, key path)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    import ipaddress

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "syncprep lab")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    paths = (os.path.join(folder, "lab-cert.pem"), os.path.join(folder, "lab-key.pem"))
    blobs = (
        cert.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )
    for path, blob in zip(paths, blobs):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, PRIVATE)
        with os.fdopen(fd, "wb") as fh:
            fh.write(blob)
    return paths


def server_context(certfile, keyfile):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certfile, keyfile)
    context.set_alpn_protocols(["h2", "http/1.1"])
    return context


def serve_h2(sock, emulator):
    """Answer the HTTP/2 requests of one connection until the client closes it."""
    import h2.config
    import h2.connection
    import h2.events

    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    requests, pending = {}, {}
    while True:
        try:
            data = sock.recv(65535)
        except (ConnectionError, OSError):
            return
        if not data:
            return
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.RequestReceived):
                requests[event.stream_id] = (dict(event.headers), bytearray())
            elif isinstance(event, h2.events.DataReceived):
                requests[event.stream_id][1].extend(event.data)
                conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                headers, body = requests.pop(event.stream_id)
                _answer(conn, emulator, event.stream_id, headers, bytes(body), pending)
            elif isinstance(event, h2.events.StreamReset):
                requests.pop(event.stream_id, None)
                pending.pop(event.stream_id, None)
            elif isinstance(event, h2.events.ConnectionTerminated):
                sock.sendall(conn.data_to_send())
                return
        _flush(conn, pending)
        sock.sendall(conn.data_to_send())


def _answer(conn, emulator, stream_id, headers, body, pending):
    message = email.message.Message()
    for name, value in headers.items():
        if not name.startswith(":"):
            message[name] = value
    try:
        reply = emulator.handle(headers[":method"], headers[":path"], message, body)
    except Exception as exc:  # noqa: BLE001 - an emulator bug answers 500, as in HTTP/1.1
        reply = emulator.internal_error(exc)
    if reply.drop:
        import h2.errors

        conn.reset_stream(stream_id, error_code=h2.errors.ErrorCodes.INTERNAL_ERROR)
        return
    payload = b"" if reply.body is None else json.dumps(reply.body).encode()
    out = [(":status", str(reply.status))]
    if reply.html is not None:
        payload = reply.html.encode()
        out.append(("content-type", "text/html; charset=utf-8"))
    elif reply.body is not None:
        out.append(("content-type", "application/json; odata.metadata=minimal; charset=utf-8"))
    out += [(name.lower(), str(value)) for name, value in reply.headers.items()]
    out += [("date", emulator.lab_date()), ("request-id", str(uuid.uuid4())), ("content-length", str(len(payload)))]
    conn.send_headers(stream_id, out, end_stream=not payload)
    if payload:
        pending[stream_id] = payload


def _flush(conn, pending):
    """Send what the flow-control windows allow; the rest waits for WINDOW_UPDATE frames."""
    for stream_id in list(pending):
        payload = pending[stream_id]
        while payload:
            room = min(conn.local_flow_control_window(stream_id), conn.max_outbound_frame_size, len(payload))
            if room <= 0:
                break
            conn.send_data(stream_id, payload[:room], end_stream=room == len(payload))
            payload = payload[room:]
        if payload:
            pending[stream_id] = payload
        else:
            del pending[stream_id]
