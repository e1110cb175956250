"""When a journal append finds the lease gone, the error said "force-unlocked?" even when the
lease ran out because its renewals had failed (a network that dropped them): the renewer kept
that failure (``_Renewer.lost``, "remembered; the next append fails on its own") but nothing read
it. The append's error now says the last renewal's failure; with renewals that worked it still
asks whether the lock was force-unlocked."""

import pytest

import azurite


@pytest.fixture(scope="module")
def storage():
    yield from azurite.start()


class _OneTry:
    """The renewer's pauses: one renewal, then stopped."""

    def __init__(self):
        self.waits = 0

    def wait(self, seconds):
        self.waits += 1
        return self.waits > 1

    def set(self):
        pass


def _failing_renewal(held):
    """The real renewer stopped, then one renewal of it that fails as a dropped connection does."""
    from azure.core.exceptions import ServiceRequestError

    renewer = held._renewer
    renewer.stopped.set()
    renewer.join()

    def renew_once():
        raise ServiceRequestError("<urllib3.connection.HTTPSConnection object>: Failed to establish a new connection: [Errno 101] Network is unreachable")

    renewer.renew_once = renew_once
    renewer.stopped = _OneTry()
    renewer.run()
    assert renewer.lost


def _break(state):
    """The lease gone from under its holder, as when it runs out (at once, not after 15 s)."""
    from azure.storage.blob import BlobLeaseClient

    BlobLeaseClient(state.blob).break_lease(lease_break_period=0)


def _open(storage, slug):
    from providers.azureblob import BlobState
    from reconciler.desired import StateSpec

    spec = StateSpec(account_url=storage.account_url, container="renewals", auth="token-env", lease_seconds=15)
    return BlobState.open(spec, slug, ca_bundle=storage.ca_bundle, environ=storage.env)


def test_a_lease_lost_after_failed_renewals_says_the_renewals_failed(storage):
    from reconciler.errors import ReconcilerError
    from reconciler.journal import Journal

    state = _open(storage, "lost")
    try:
        with state.lock("apply a") as held:
            _failing_renewal(held)
            _break(state)
            with pytest.raises(ReconcilerError) as raised:
                Journal(state).start("sum", "apply", ["x"])
        message = str(raised.value)
        assert "no longer this apply's" in message and "the journal was not written" in message
        assert "its last renewal failed: ServiceRequestError: " in message and "Network is unreachable" in message
        assert "force-unlocked?" not in message and "\n" not in message
    finally:
        state.close()


def test_a_lease_lost_while_renewals_worked_still_asks_about_force_unlock(storage):
    from reconciler.errors import ReconcilerError
    from reconciler.journal import Journal

    state = _open(storage, "broken")
    try:
        with state.lock("apply a"):
            _break(state)
            with pytest.raises(ReconcilerError) as raised:
                Journal(state).start("sum", "apply", ["x"])
        # Azure's code as the REST API spells it: azure-storage-blob's StorageErrorCode formatted
        # as "StorageErrorCode.LEASE_NOT_PRESENT_WITH_BLOB_OPERATION" in the message.
        assert "no longer this apply's (LeaseNotPresentWithBlobOperation: force-unlocked?)" in str(raised.value)
    finally:
        state.close()

