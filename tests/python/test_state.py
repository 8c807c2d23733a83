"""State through DaprClient (Dapr's gRPC API) on the embedded in-memory store: save, get,
delete, ETags and concurrency, bulk, transactions, query. The SDK's state calls exist only
over gRPC (its HTTP client does service invocation and actors), so there is no HTTP variant
to run; tests/ in Rust cover Plinth's HTTP state routes."""

import json

import grpc
import pytest
from dapr.clients.exceptions import DaprGrpcError
from dapr.clients.grpc._request import TransactionalStateOperation, TransactionOperationType
from dapr.clients.grpc._state import Concurrency, StateItem, StateOptions

from conftest import unique

STATE = 'statestore'


def test_save_get_delete(client):
    key = unique('state')
    client.save_state(STATE, key, 'hello')

    got = client.get_state(STATE, key)
    assert got.data == b'hello'
    assert got.etag

    client.delete_state(STATE, key)
    gone = client.get_state(STATE, key)
    assert gone.data == b''
    assert gone.etag == ''


def test_bytes_are_kept_exactly(client):
    key = unique('bytes')
    value = bytes(range(256))
    client.save_state(STATE, key, value)
    assert client.get_state(STATE, key).data == value


def test_each_write_gets_a_new_etag(client):
    key = unique('etag')
    client.save_state(STATE, key, 'v1')
    first = client.get_state(STATE, key).etag
    client.save_state(STATE, key, 'v2', etag=first)
    second = client.get_state(STATE, key).etag
    assert second and second != first


def test_stale_etag_is_aborted(client):
    key = unique('etag')
    client.save_state(STATE, key, 'v1')
    first = client.get_state(STATE, key).etag
    client.save_state(STATE, key, 'v2', etag=first)

    with pytest.raises(DaprGrpcError) as err:
        client.save_state(STATE, key, 'v3', etag=first)
    assert err.value.code() == grpc.StatusCode.ABORTED
    assert client.get_state(STATE, key).data == b'v2'


def test_delete_with_a_stale_etag_is_aborted(client):
    key = unique('etag-delete')
    client.save_state(STATE, key, 'v1')
    first = client.get_state(STATE, key).etag
    client.save_state(STATE, key, 'v2')

    with pytest.raises(DaprGrpcError) as err:
        client.delete_state(STATE, key, etag=first)
    assert err.value.code() == grpc.StatusCode.ABORTED
    assert client.get_state(STATE, key).data == b'v2'

    client.delete_state(STATE, key, etag=client.get_state(STATE, key).etag)
    assert client.get_state(STATE, key).data == b''


def test_first_write_wins(client):
    key = unique('first-write')
    first_write = StateOptions(concurrency=Concurrency.first_write)
    client.save_state(STATE, key, 'mine', options=first_write)
    etag = client.get_state(STATE, key).etag

    # Two writers read the same ETag; only the first write with it succeeds.
    client.save_state(STATE, key, 'winner', etag=etag, options=first_write)
    with pytest.raises(DaprGrpcError) as err:
        client.save_state(STATE, key, 'loser', etag=etag, options=first_write)
    assert err.value.code() == grpc.StatusCode.ABORTED
    assert client.get_state(STATE, key).data == b'winner'


def test_bulk_save_and_get(client):
    keys = [unique('bulk') for _ in range(3)]
    client.save_bulk_state(STATE, [StateItem(key=k, value=f'value-{i}') for i, k in enumerate(keys)])

    missing = unique('missing')
    got = {item.key: item for item in client.get_bulk_state(STATE, keys + [missing]).items}
    assert {k: got[k].data for k in keys} == {k: f'value-{i}'.encode() for i, k in enumerate(keys)}
    assert all(got[k].etag for k in keys)
    assert got[missing].data == b''
    assert got[missing].etag == ''


def test_bulk_save_with_a_stale_etag_is_aborted(client):
    key = unique('bulk-etag')
    client.save_state(STATE, key, 'v1')
    stale = client.get_state(STATE, key).etag
    client.save_state(STATE, key, 'v2')

    with pytest.raises(DaprGrpcError) as err:
        client.save_bulk_state(STATE, [StateItem(key=key, value='v3', etag=stale)])
    assert err.value.code() == grpc.StatusCode.ABORTED
    assert client.get_state(STATE, key).data == b'v2'


def test_transaction_upserts_and_deletes(client):
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


def test_transaction_is_all_or_nothing(client):
    fresh, guarded = unique('tx-fresh'), unique('tx-guarded')
    client.save_state(STATE, guarded, 'v1')
    stale = client.get_state(STATE, guarded).etag
    client.save_state(STATE, guarded, 'v2')

    with pytest.raises(DaprGrpcError) as err:
        client.execute_state_transaction(
            STATE,
            [
                TransactionalStateOperation(key=fresh, data='never'),
                TransactionalStateOperation(key=guarded, data='v3', etag=stale),
            ],
        )
    assert err.value.code() == grpc.StatusCode.ABORTED
    assert client.get_state(STATE, fresh).data == b''
    assert client.get_state(STATE, guarded).data == b'v2'


@pytest.mark.filterwarnings('ignore:The State Store Query API is an Alpha version')
def test_query(client):
    team = unique('team')
    people = {
        unique('person'): {'team': team, 'name': 'ada', 'age': 36},
        unique('person'): {'team': team, 'name': 'grace', 'age': 45},
        unique('person'): {'team': team, 'name': 'alan', 'age': 41},
        unique('person'): {'team': unique('other'), 'name': 'edsger', 'age': 72},
    }
    client.save_bulk_state(
        STATE, [StateItem(key=k, value=json.dumps(v)) for k, v in people.items()]
    )

    query = {
        'filter': {'AND': [{'EQ': {'team': team}}, {'GT': {'age': 40}}]},
        'sort': [{'key': 'age', 'order': 'DESC'}],
    }
    got = client.query_state(STATE, json.dumps(query))
    assert [json.loads(r.value)['name'] for r in got.results] == ['grace', 'alan']
    assert all(r.key in people and r.etag for r in got.results)
    assert got.token == ''


def test_unknown_store_is_invalid_argument(client):
    with pytest.raises(DaprGrpcError) as err:
        client.get_state(unique('no-such-store'), 'key')
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
