"""The WinRM session asks requests for the environment's proxy once per URL instead of once per
request (issue 19), and gets the answer requests would have given each request."""

import pytest
import requests
import requests.utils
from requests.adapters import BaseAdapter

from providers.entraconnect import session as psrp_session


class _Recorder(BaseAdapter):
    """An adapter that sends nothing: it keeps the proxies each request was sent with."""

    def __init__(self):
        super().__init__()
        self.proxies = []

    def send(self, request, stream=False, timeout=None, verify=True, cert=None, proxies=None):
        self.proxies.append(proxies)
        response = requests.Response()
        response.status_code, response.url, response.request, response._content = 200, request.url, request, b""
        return response

    def close(self):
        pass


def _sent_proxies(urls, proxies=None, wrapped=True):
    session = requests.Session()
    session.proxies = dict(proxies or {})
    recorder = _Recorder()
    session.mount("http://", recorder)
    session.mount("https://", recorder)
    if wrapped:
        psrp_session._proxies_once_per_url(session)
        psrp_session._proxies_once_per_url(session)  # a pool opened again wraps nothing twice
    for url in urls:
        session.send(requests.Request("POST", url, data=b"<s/>").prepare(), timeout=5)
    return recorder.proxies


@pytest.mark.parametrize(
    "proxies",
    [{}, {"http": False}, {"https": "http://operator-proxy.test:8080"}],
    ids=["environment", "no_proxy-loopback", "explicit-proxy"],
)
def test_each_request_gets_the_proxy_requests_would_have_picked(monkeypatch, proxies):
    monkeypatch.setenv("HTTP_PROXY", "http://env-proxy.test:3128")
    monkeypatch.setenv("HTTPS_PROXY", "http://env-proxy.test:3129")
    monkeypatch.setenv("NO_PROXY", "bypassed.test")
    urls = ["http://sync01.contoso.test:5985/wsman", "https://sync01.contoso.test:5986/wsman", "http://bypassed.test:5985/wsman"] * 3
    expected = _sent_proxies(urls, proxies, wrapped=False)
    assert _sent_proxies(urls, proxies) == expected
    if not proxies:
        assert expected[0] == {"http": "http://env-proxy.test:3128"} and expected[2] == {}


def test_the_environment_is_read_once_per_url(monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "http://env-proxy.test:3128")
    calls = []
    resolve = requests.utils.resolve_proxies
    monkeypatch.setattr(requests.utils, "resolve_proxies", lambda *a, **k: calls.append(a[0].url) or resolve(*a, **k))
    sent = _sent_proxies(["http://sync01.contoso.test:5985/wsman"] * 20)
    assert sent == [{"http": "http://env-proxy.test:3128"}] * 20
    assert calls == ["http://sync01.contoso.test:5985/wsman"]


def test_a_served_session_asks_for_no_proxy_again_however_many_scripts_it_runs(served, monkeypatch):
    """Where the wrapping is switched on (PsrpSession._open), against the served lab: five
    scripts after the first, several WS-Man requests each, no proxy lookup (final read D5: the tests above
    call the helper themselves, so dropping it from _open passed them)."""
    import requests.sessions

    calls = []
    for module in (requests.utils, requests.sessions):
        resolve = module.resolve_proxies
        monkeypatch.setattr(module, "resolve_proxies", lambda *a, _r=resolve, **k: calls.append(a[0].url) or _r(*a, **k))
    _lab, _endpoint, server = served()
    assert server.session.invoke("ConvertTo-Json -InputObject 1") == 1  # opens the pool
    assert calls  # the pool's opening, and the first request after it
    calls.clear()
    for _ in range(5):
        assert server.session.invoke("ConvertTo-Json -InputObject 1") == 1
    assert calls == []
