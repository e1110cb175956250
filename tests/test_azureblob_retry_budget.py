"""Unreachable storage is reported after 2 attempts, whatever mix of transport errors it gives.

A server that resets the TLS handshake gives ServiceRequestError or ServiceResponseError
depending on when the reset arrives (a race). The SDK's policy counts them in two budgets
(retry_connect, retry_read), so one of each made a third attempt (the 1-in-70 flake of
test_an_unreachable_storage_account_is_tried_twice_not_four_times). The clients' policy
counts both in one budget of one retry. Driven here without a network: the next policy in
the pipeline fails (or answers) as told, in order, and counts the attempts.
"""

import pytest
from azure.core.exceptions import ServiceRequestError, ServiceResponseError
from azure.core.pipeline import PipelineContext, PipelineRequest, PipelineResponse
from azure.core.rest import HttpRequest

from providers.azureblob import client_options


class _NoSleep:
    def sleep(self, seconds):
        pass


class _Answer:
    """An HTTP response as the retry policy reads it."""

    def __init__(self, status):
        self.status_code = status
        self.headers = {}
        self.location_mode = None


class _Scripted:
    """The next policy: each attempt takes the next outcome (an exception raised, or a status)."""

    def __init__(self, outcomes):
        self.outcomes = list(outcomes)
        self.attempts = 0

    def send(self, request):
        self.attempts += 1
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return PipelineResponse(request.http_request, _Answer(outcome), request.context)


def _attempts(outcomes):
    policy = client_options()["retry_policy"]
    policy.next = scripted = _Scripted(outcomes)
    request = PipelineRequest(HttpRequest("GET", "https://account.blob.core.windows.net/c/b"), PipelineContext(_NoSleep()))
    try:
        policy.send(request)
    except (ServiceRequestError, ServiceResponseError) as exc:
        return scripted.attempts, type(exc).__name__
    return scripted.attempts, None


def _connect():
    return ServiceRequestError("Connection reset by peer (TLS handshake)")


def _read():
    return ServiceResponseError("Connection aborted: reset by peer")


@pytest.mark.parametrize(
    "first, second",
    [(_connect, _read), (_read, _connect), (_connect, _connect), (_read, _read)],
    ids=["connect-then-read", "read-then-connect", "connect-twice", "read-twice"],
)
def test_two_transport_failures_of_any_kind_end_it_after_two_attempts(first, second):
    attempts, raised = _attempts([first(), second(), _connect(), _read(), 200])
    assert attempts == 2
    assert raised == type(second()).__name__


def test_one_transport_failure_is_retried_once():
    assert _attempts([_read(), 200]) == (2, None)
    assert _attempts([_connect(), 200]) == (2, None)


def test_a_busy_server_keeps_its_three_retries():
    assert _attempts([503, 503, 503, 200]) == (4, None)
    assert _attempts([503, 503, 503, 503, 200]) == (4, None)  # the fourth 503 is the answer


def test_a_busy_server_after_a_transport_failure_still_ends_within_the_total():
    # retry_total=3 bounds every mix: the last 503 is the answer (the SDK raises it above this policy)
    assert _attempts([_connect(), 503, 503, 503, 503, 503, 200]) == (4, None)
