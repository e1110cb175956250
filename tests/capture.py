"""A capture server: a tiny http.server on 127.0.0.1 that records every request it receives.

The attacks of issue 15 are reproduced against it: a desired-state file or a saved plan
points the tool at it, and the test checks that nothing (no request, no header, no
credential) arrived.
"""

import http.server
import threading


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
