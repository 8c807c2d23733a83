"""Distributed locks and metadata through DaprClient (Dapr's gRPC API), on the embedded
default components."""

import grpc
import pytest
from dapr.clients.grpc._jobs import Job
from dapr.clients.grpc._response import UnlockResponseStatus

from conftest import APP_ID, SHUTDOWN_TIMEOUT_S, run_plinth, unique

LOCKS = 'lockstore'
EMBEDDED_COMPONENTS = {
    'statestore': 'state.in-memory',
    'pubsub': 'pubsub.in-memory',
    'lockstore': 'lock.in-memory',
    'sequencer': 'sequencer.in-memory',
    'configstore': 'configuration.in-memory',
    'filestore': 'file.local',
    'secretstore': 'secretstores.local.env',
}

alpha_locks = pytest.mark.filterwarnings('ignore:The Distributed Lock API is an Alpha version')


@alpha_locks
def test_lock_second_owner_refused(client):
    resource, owner, other = unique('lock'), unique('owner'), unique('other')

    assert client.try_lock(LOCKS, resource, owner, 30).success
    assert not client.try_lock(LOCKS, resource, other, 30).success

    refused = client.unlock(LOCKS, resource, other)
    assert refused.status == UnlockResponseStatus.lock_belongs_to_others
    released = client.unlock(LOCKS, resource, owner)
    assert released.status == UnlockResponseStatus.success
    again = client.unlock(LOCKS, resource, owner)
    assert again.status == UnlockResponseStatus.lock_does_not_exist

    assert client.try_lock(LOCKS, resource, other, 30).success
    assert client.unlock(LOCKS, resource, other).status == UnlockResponseStatus.success


@alpha_locks
def test_lock_as_context_manager(client):
    resource, owner, other = unique('lock'), unique('owner'), unique('other')
    with client.try_lock(LOCKS, resource, owner, 30) as lock:
        assert lock
        assert not client.try_lock(LOCKS, resource, other, 30)
    # Leaving the block unlocked it.
    assert client.unlock(LOCKS, resource, owner).status == UnlockResponseStatus.lock_does_not_exist
    with client.try_lock(LOCKS, resource, other, 30) as lock:
        assert lock


@alpha_locks
def test_lock_in_an_unknown_store_fails(client):
    with pytest.raises(Exception) as err:
        client.try_lock(unique('no-such-store'), unique('lock'), 'owner', 30)
    assert 'no-such-store' in str(err.value)


def test_get_metadata(client):
    got = client.get_metadata()
    assert got.application_id == APP_ID
    types = {c.name: c.type for c in got.registered_components}
    assert types == EMBEDDED_COMPONENTS
    state = next(c for c in got.registered_components if c.name == 'statestore')
    assert {'ETAG', 'TRANSACTIONAL', 'TTL', 'QUERY_API'} <= set(state.capabilities)
    assert got.extended_metadata['daprRuntimeVersion']


def test_set_metadata(client):
    name, value = unique('attr'), unique('value')
    client.set_metadata(name, value)
    assert client.get_metadata().extended_metadata[name] == value
    client.set_metadata(name, 'changed')
    assert client.get_metadata().extended_metadata[name] == 'changed'


def test_metadata_of_a_sidecar_with_declared_components(grpc_app, make_client):
    client = make_client(grpc_app.plinth)
    types = {c.name: c.type for c in client.get_metadata().registered_components}
    assert types == {
        'pubsub': 'pubsub.in-memory',
        'statestore': 'state.in-memory',
        'tick': 'bindings.cron',
    }


def test_endpoints_from_the_environment(plinth, point_sdk_at, monkeypatch):
    """DAPR_GRPC_ENDPOINT and DAPR_HTTP_ENDPOINT instead of host and ports."""
    from dapr.clients import DaprClient

    point_sdk_at(plinth)
    for name in ('DAPR_RUNTIME_HOST', 'DAPR_GRPC_PORT', 'DAPR_HTTP_PORT'):
        monkeypatch.delenv(name)
    monkeypatch.setenv('DAPR_GRPC_ENDPOINT', f'{plinth.grpc_address}?tls=false')
    monkeypatch.setenv('DAPR_HTTP_ENDPOINT', f'http://{plinth.http_address}')
    with DaprClient() as client:
        assert client.get_metadata().application_id == APP_ID


@pytest.mark.filterwarnings('ignore::DeprecationWarning')
def test_apis_plinth_lacks_answer_unimplemented(client):
    # The jobs API (and actors, workflows, crypto, conversation) is not Plinth's: the SDK gets
    # UNIMPLEMENTED with a message naming the rpc.
    with pytest.raises(grpc.RpcError) as err:
        client.schedule_job(Job(name=unique('job'), schedule='@every 1m'))
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert 'not supported by Plinth' in err.value.details()


def test_shutdown_stops_plinth(make_client):
    with run_plinth() as p:
        make_client(p).shutdown()
        # It exits by itself (no SIGTERM from run_plinth), with 0.
        assert p.proc.wait(timeout=SHUTDOWN_TIMEOUT_S) == 0
