"""A loopback Entra ID for one tenant and one app, over HTTPS with its own certificate.

It serves what azure-identity and MSAL ask of an authority: the tenant's OpenID discovery
document (``/{tenant}/v2.0/.well-known/openid-configuration``) and token endpoint
(``/{tenant}/oauth2/v2.0/token``, client credentials with a client secret or a client
assertion), and, as GitHub Actions does, an OIDC token URL (``/github/idtoken``) that answers
the job's token for the audience asked for when sent the request token. It records every
request, so a test can tell what reached it and what did not.
"""

import base64
import http.server
import json
import ssl
import threading
import time
from urllib.parse import parse_qs, urlsplit

from providers.lab.tls import make_certificate

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
DEVICE_CODE = "urn:ietf:params:oauth:grant-type:device_code"
USER = "admin@contoso.onmicrosoft.com"


def _b64(data):
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


class TokenServer:
    """``with TokenServer(folder, tenant, client, access_token, secret=..., assertion=...) as entra:``

    ``entra.url`` is the authority (``AZURE_AUTHORITY_HOST``), ``entra.ca_bundle`` its certificate,
    ``entra.github_url`` the OIDC token URL; ``entra.requests`` lists (method, path, headers, form).
    """

    def __init__(self, folder, tenant, client, access_token, secret=None, assertion=None, github_request_token=None, certificate=None):
        """``certificate``: the app's certificate (PEM bytes); a client assertion signed with its key passes."""
        self.certificate = certificate
        self.tenant, self.client, self.access_token = tenant, client, access_token
        self.secret, self.assertion, self.github_request_token = secret, assertion, github_request_token
        self.requests = []
        self.ca_bundle, key = make_certificate(str(folder))
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server._record(self, {})
                parts = urlsplit(self.path)
                if parts.path == f"/{server.tenant}/v2.0/.well-known/openid-configuration":
                    return self._json(200, server.discovery())
                if parts.path == "/github/idtoken":
                    return self._json(*server.github(self.headers.get("Authorization", ""), parse_qs(parts.query)))
                return self._json(404, {"error": "not_found", "error_description": f"no {parts.path} here"})

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                form = {k: v[0] for k, v in parse_qs(body).items()}
                server._record(self, form)
                path = urlsplit(self.path).path
                if path == f"/{server.tenant}/oauth2/v2.0/devicecode":
                    return self._json(200, server.device_code(form))
                if path != f"/{server.tenant}/oauth2/v2.0/token":
                    return self._json(404, {"error": "not_found"})
                return self._json(*server.token(form))

            def _json(self, status, payload):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.ca_bundle, key)
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self.port = self._server.server_address[1]
        self.url = f"https://127.0.0.1:{self.port}"
        self.github_url = f"{self.url}/github/idtoken?api-version=2.0"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def _record(self, handler, form):
        self.requests.append((handler.command, handler.path, dict(handler.headers), form))

    def discovery(self):
        base = f"{self.url}/{self.tenant}"
        return {
            "issuer": f"{base}/v2.0",
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
        }

    def device_code(self, form):
        """A device code that is already entered (the user signed in at once)."""
        self.device_codes = getattr(self, "device_codes", 0) + 1
        return {
            "device_code": f"device-code-{self.device_codes}",
            "user_code": f"CODE{self.device_codes}",
            "verification_uri": "https://microsoft.com/devicelogin",
            "expires_in": 900,
            "interval": 1,
            "message": "To sign in, use a web browser",
        }

    def _user_tokens(self, client):
        now = int(time.time())
        base = f"{self.url}/{self.tenant}"
        claims = {"iss": f"{base}/v2.0", "aud": client, "sub": "user-sub", "oid": "user-oid", "tid": self.tenant,
                  "preferred_username": USER, "iat": now, "nbf": now, "exp": now + 3600, "ver": "2.0"}
        return 200, {
            "token_type": "Bearer",
            "scope": "https://graph.microsoft.com/.default",
            "expires_in": 3599,
            "ext_expires_in": 3599,
            "access_token": self.access_token,
            "refresh_token": "refresh-token-1",
            "id_token": f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}.",
            "client_info": _b64({"uid": "user-oid", "utid": self.tenant}),
        }

    def token(self, form):
        """Client credentials, as Entra ID checks them: the app, then its secret or its assertion;
        device code and refresh token for a public client."""
        if form.get("grant_type") in (DEVICE_CODE, "refresh_token"):
            if form.get("grant_type") == DEVICE_CODE and not form.get("device_code", "").startswith("device-code-"):
                return 400, {"error": "invalid_grant", "error_description": "AADSTS70000: bad device code"}
            return self._user_tokens(form.get("client_id"))
        if form.get("grant_type") != "client_credentials" or form.get("scope") != "https://graph.microsoft.com/.default":
            return 400, {"error": "invalid_request", "error_description": "AADSTS900144: unexpected grant or scope"}
        if form.get("client_id") != self.client:
            return 400, {"error": "unauthorized_client", "error_description": "AADSTS700016: Application not found in the directory"}
        if "client_secret" in form:
            ok = self.secret is not None and form["client_secret"] == self.secret
        elif form.get("client_assertion_type") != JWT_BEARER:
            ok = False
        else:
            ok = form.get("client_assertion") == self.assertion and self.assertion is not None or self._signed(form.get("client_assertion", ""))
        if not ok:
            return 401, {"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret or assertion provided."}
        return 200, {"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": self.access_token}

    def _signed(self, assertion):
        """A JWT the app signed with its certificate's key, for this token endpoint (as Entra ID checks)."""
        if self.certificate is None:
            return False
        import jwt
        from cryptography import x509

        cert = x509.load_pem_x509_certificate(self.certificate)
        try:
            claims = jwt.decode(assertion, cert.public_key(), algorithms=["RS256", "PS256"], audience=f"{self.url}/{self.tenant}/oauth2/v2.0/token")
        except jwt.PyJWTError:
            return False
        return claims.get("iss") == claims.get("sub") == self.client

    def github(self, authorization, query):
        if self.github_request_token is None or authorization != f"bearer {self.github_request_token}":
            return 403, {"message": "Unable to get ACTIONS_ID_TOKEN_REQUEST_URL env variable"}
        if query.get("audience") != ["api://AzureADTokenExchange"]:
            return 400, {"message": "wrong audience"}
        return 200, {"count": 1, "value": self.assertion}

    def received(self, secret):
        return any(secret in " ".join([path, json.dumps(headers), json.dumps(form)]) for _m, path, headers, form in self.requests)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()
        return False
