"""Azurite (the Azure Storage emulator, npm package ``azurite``), started by the tests on loopback.

``.ci/run`` installs it into ``.ci/node`` (``npm ci --prefix .ci/node``). It serves blobs
over HTTPS with a certificate made here and checks bearer tokens (``--oauth basic``:
issuer, audience and times, not the signature), so the backend signs in as it does
against Azure: a TokenCredential, over TLS, to an endpoint the operator allowed.

Missing Azurite fails the test when ``CI`` is set (a CI run must not pass by skipping);
elsewhere it skips, saying how to install it.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LOCAL = ROOT / ".ci" / "node" / "node_modules" / ".bin" / "azurite-blob"
INSTALL = "npm ci --prefix .ci/node (what .ci/run does)"


def executable():
    if LOCAL.exists():
        return str(LOCAL)
    return shutil.which("azurite-blob")


def fake_token(lifetime=3600):
    """A bearer token Azurite's basic OAuth check accepts (Azure would check its signature too)."""

    def part(data):
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    now = int(time.time())
    tenant = "ab1f708d-50f6-404c-a006-d71b2ac7a606"
    claims = {"iss": f"https://sts.windows.net/{tenant}/", "aud": "https://storage.azure.com", "nbf": now - 60, "iat": now - 60, "exp": now + lifetime, "tid": tenant, "oid": "syncprep-tests"}
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}.signature"


class Azurite:
    def __init__(self, url, ca_bundle, process):
        self.url = url
        self.account_url = f"{url}/devstoreaccount1"
        self.ca_bundle = ca_bundle
        self.process = process
        self.env = {"SYNCPREP_STORAGE_TOKEN": fake_token(), "SYNCPREP_CA_BUNDLE": ca_bundle, "SYNCPREP_ALLOW_ENDPOINTS": url}

    def state_toml(self, container="syncprep", lease_seconds=15):
        return f'[state]\nbackend = "azureblob"\naccount_url = "{self.account_url}"\ncontainer = "{container}"\nauth = "token-env"\nlease_seconds = {lease_seconds}\n'


def start():
    """Start Azurite's blob service on a free loopback port; the generator stops it after."""
    binary = executable()
    if binary is None:
        message = f"Azurite is not installed: {INSTALL}"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; in CI the azureblob tests must run, not skip")
        pytest.skip(message)
    from providers.lab.tls import make_certificate

    folder = tempfile.mkdtemp(prefix="syncprep-azurite-")
    cert, key = make_certificate(folder)
    log = open(Path(folder) / "azurite.log", "w+")
    process = subprocess.Popen(
        [binary, "--blobHost", "127.0.0.1", "--blobPort", "0", "--inMemoryPersistence", "--skipApiVersionCheck", "--disableTelemetry",
         "--cert", cert, "--key", key, "--oauth", "basic"],
        stdout=log, stderr=subprocess.STDOUT, cwd=folder, start_new_session=True,
    )
    try:
        url = _wait_for_url(process, log)
        yield Azurite(url, cert, process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        log.close()
        shutil.rmtree(folder, ignore_errors=True)


def _wait_for_url(process, log):
    import re

    for _ in range(600):  # up to a minute, in tenths of a second
        log.seek(0)
        found = re.search(r"listens on (https://127\.0\.0\.1:\d+)", log.read())
        if found:
            return found.group(1)
        if process.poll() is not None:
            break
        time.sleep(0.1)
    log.seek(0)
    pytest.fail(f"Azurite did not start: {log.read()[-2000:]}")
