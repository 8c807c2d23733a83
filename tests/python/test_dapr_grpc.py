"""The official Dapr Python SDK's gRPC client against Plinth's Dapr API."""

import uuid

import grpc
import pytest
from dapr.clients.exceptions import DaprGrpcError
from dapr.clients.grpc._request import TransactionalStateOperation, TransactionOperationType
from dapr.clients.grpc._response import UnlockResponseStatus
from dapr.clients.grpc._state import StateItem

from conftest import APP_ID, SECRET_NAME, SECRET_VALUE

STATE = 'statestore'
EMBEDDED_COMPONENTS = {
    'statestore',
    'pubsub',
    'lockstore',
    'sequencer',
    'configstore',
    'filestore',
    'secretstore',
}


def unique(name):
    return f'{name}-{uuid.uuid4().hex}'


def test_save_get_delete_state(client):
    key = unique('state')
    client.save_state(STATE, key, 'hello')

    got = client.get_state(STATE, key)
    assert got.data == b'hello'
    assert got.etag

    client.delete_state(STATE, key)
    gone = client.get_state(STATE, key)
    assert gone.data == b''
    assert gone.etag == ''


def test_stale_etag_is_aborted(client):
    key = unique('etag')
    client.save_state(STATE, key, 'v1')
    first = client.get_state(STATE, key).etag
    client.save_state(STATE, key, 'v2', etag=first)

    with pytest.raises(DaprGrpcError) as err:
        client.save_state(STATE, key, 'v3', etag=first)
    assert err.value.code() == grpc.StatusCode.ABORTED
    assert client.get_state(STATE, key).data == b'v2'


def test_bulk_state(client):
    keys = [unique('bulk') for _ in range(3)]
    client.save_bulk_state(STATE, [StateItem(key=k, value=f'value-{i}') for i, k in enumerate(keys)])

    missing = unique('missing')
    got = {item.key: item for item in client.get_bulk_state(STATE, keys + [missing]).items}
    assert {k: got[k].data for k in keys} == {k: f'value-{i}'.encode() for i, k in enumerate(keys)}
    assert all(got[k].etag for k in keys)
    assert got[missing].data == b''


def test_state_transaction(client):
    kept, dropped = unique('tx-kept'), unique('tx-dropped')
    client.save_state(STATE, dropped, 'old')

    client.execute_state_transaction(
        STATE,
        [
            TransactionalStateOperation(key=kept, data='new'),
            TransactionalStateOperation(key=dropped, operation_type=TransactionOperationType.delete),
        ],
    )

    assert client.get_state(STATE, kept).data == b'new'
    assert client.get_state(STATE, dropped).data == b''


def test_publish_event(client):
    client.publish_event(
        'pubsub', unique('topic'), '{"hello":"world"}', data_content_type='application/json'
    )


def test_get_secret_from_the_env_store(client):
    got = client.get_secret('secretstore', SECRET_NAME)
    assert got.secret == {SECRET_NAME: SECRET_VALUE}


def test_get_configuration(client):
    got = client.get_configuration('configstore', [unique('config')])
    assert dict(got.items) == {}


def test_subscribe_and_unsubscribe_configuration(client):
    changes = []
    sub_id = client.subscribe_configuration(
        'configstore', [unique('config')], lambda id_, resp: changes.append(resp)
    )
    assert sub_id

    assert client.unsubscribe_configuration('configstore', sub_id) is True
    assert client.unsubscribe_configuration('configstore', sub_id) is False
    assert changes == []


@pytest.mark.filterwarnings('ignore:The Distributed Lock API is an Alpha version')
def test_lock_second_owner_refused(client):
    resource, owner, other = unique('lock'), unique('owner'), unique('other')

    assert client.try_lock('lockstore', resource, owner, 30).success
    assert not client.try_lock('lockstore', resource, other, 30).success

    refused = client.unlock('lockstore', resource, other)
    assert refused.status == UnlockResponseStatus.lock_belongs_to_others
    released = client.unlock('lockstore', resource, owner)
    assert released.status == UnlockResponseStatus.success
    again = client.unlock('lockstore', resource, owner)
    assert again.status == UnlockResponseStatus.lock_does_not_exist

    assert client.try_lock('lockstore', resource, other, 30).success
    assert client.unlock('lockstore', resource, other).status == UnlockResponseStatus.success


def test_get_metadata(client):
    got = client.get_metadata()
    assert got.application_id == APP_ID
    names = {c.name for c in got.registered_components}
    assert names == EMBEDDED_COMPONENTS
    state = next(c for c in got.registered_components if c.name == STATE)
    assert state.type.startswith('state.')


def test_set_metadata(client):
    name, value = unique('attr'), unique('value')
    client.set_metadata(name, value)
    assert client.get_metadata().extended_metadata[name] == value


def test_unknown_store_is_invalid_argument(client):
    with pytest.raises(DaprGrpcError) as err:
        client.get_state(unique('no-such-store'), 'key')
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
