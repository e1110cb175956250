"""Capturing what the tool sends and says.

A capture server: a tiny http.server on 127.0.0.1 that records every request it receives.
The attacks of issue 15 are reproduced against it: a desired-state file or a saved plan
points the tool at it, and the test checks that nothing (no request, no header, no
credential) arrived.

``run_together``: processes started at once, each one's output read while they all run.
"""

import concurrent.futures
import http.server
import subprocess
import threading


def run_together(commands, timeout, **common):
    """Starts every command at once; returns ``[(returncode, stdout, stderr)]`` in their order.

    Each command is its argument list, or a dict of ``subprocess.Popen`` arguments (``args``,
    ``cwd``...); ``common`` goes to each (``env=...``). Output is text. Every process's pipes
    are read while they run (``communicate`` in a thread each): waiting for one before reading
    the others' pipes left a process that writes more than a pipe holds (64 KiB on Linux)
    blocked for ever. On a timeout every process is killed and TimeoutExpired raised."""
    kwargs = [{**common, **(c if isinstance(c, dict) else {"args": c})} for c in commands]
    processes = [subprocess.Popen(**k, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for k in kwargs]
    pool = concurrent.futures.ThreadPoolExecutor(len(processes))
    try:
        outputs = list(pool.map(lambda p: p.communicate(timeout=timeout), processes))
    finally:
        for process in processes:  # none is left running; the other threads then read EOF
            if process.poll() is None:
                process.kill()
        pool.shutdown(wait=True)
        for process in processes:
            process.wait()
    return [(p.returncode, out, err) for p, (out, err) in zip(processes, outputs)]


class CaptureServer:
    """``with CaptureServer() as capture:`` ``capture.url``; ``capture.requests`` lists (method, path, headers, body)."""

    def __init__(self):
        self.requests = []
        requests = self.requests

        class Handler(http.server.BaseHTTPRequestHandler):
            def _record(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                requests.append((self.command, self.path, dict(self.headers), body))
                self.send_response(401)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _record

            def log_message(self, *args):
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        # shutdown() waits for the loop's next poll: 0.05 s, not the default 0.5 s, at every teardown.
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()
        return False

    def received(self, secret):
        """Whether ``secret`` arrived anywhere: path, a header (Basic auth decoded too) or body."""
        import base64

        for _method, path, headers, body in self.requests:
            texts = [path, body.decode("latin-1"), *headers.values()]
            for value in headers.values():
                if value.lower().startswith("basic "):
                    try:
                        texts.append(base64.b64decode(value.split(None, 1)[1]).decode("latin-1"))
                    except ValueError:
                        pass
            if any(secret in text for text in texts):
                return True
        return False
