"""The Graph client's SSL context is made once per source of CAs and shared (issue 19), and
is made anew when that source changes: the operator's CA bundle rewritten, or SSL_CERT_FILE set."""

import os

from providers.graph import transport
from providers.lab.tls import make_certificate


def _cas(context):
    return sorted(ca["serialNumber"] for ca in context.get_ca_certs())


def test_a_ca_bundle_context_is_shared_until_the_bundle_is_rewritten(tmp_path):
    first, _key = make_certificate(str(tmp_path))
    context = transport._verify(first)
    assert transport._verify(first) is context
    assert len(_cas(context)) == 1
    other = tmp_path / "other"
    other.mkdir()
    second, _key = make_certificate(str(other))
    os.replace(second, first)  # the operator put another CA in the same file
    again = transport._verify(first)
    assert again is not context and _cas(again) != _cas(context)


def test_the_system_context_follows_ssl_cert_file(tmp_path, monkeypatch):
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    system = transport._verify(None)
    assert transport._verify(None) is system
    bundle, _key = make_certificate(str(tmp_path))
    monkeypatch.setenv("SSL_CERT_FILE", bundle)
    own = transport._verify(None)
    assert own is not system and len(_cas(own)) == 1
