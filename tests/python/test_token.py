"""The API token (docs/configuration.md, "API token"): with DAPR_API_TOKEN set for Plinth,
the SDK's calls carry it (it reads DAPR_API_TOKEN too) and succeed, and calls without it or
with another are refused, over gRPC and HTTP. Without a token configured, a client that
sends one is served. APP_API_TOKEN is what Plinth sends the app.

The secured Plinth calls the session's HTTP app (apps.py) as its app too, for invocation;
its own in-memory broker is separate, so the app's other sidecar is not disturbed."""

import uuid

import grpc
import pytest
from dapr.clients.exceptions import DaprHttpError

from conftest import APP_ID, run_plinth, unique

TOKEN = f'api-{uuid.uuid4().hex}'
APP_TOKEN = f'app-{uuid.uuid4().hex}'

pytestmark = [
    pytest.mark.filterwarnings('ignore:The Distributed Lock API is an Alpha version'),
    pytest.mark.filterwarnings('ignore:invoke_method with protocol gRPC is deprecated'),
]


@pytest.fixture(scope='module')
def secured(http_app):
    env = {'DAPR_API_TOKEN': TOKEN, 'APP_API_TOKEN': APP_TOKEN}
    with run_plinth('--app-port', str(http_app.port), '--app-protocol', 'http', env=env) as p:
        yield p


def grpc_calls(client):
    """One call of each building block, as a name and a thunk."""
    return [
        ('save_state', lambda: client.save_state('statestore', unique('key'), 'v')),
        ('get_state', lambda: client.get_state('statestore', unique('key'))),
        ('publish_event', lambda: client.publish_event('pubsub', unique('topic'), 'x')),
        ('get_secret', lambda: client.get_secret('secretstore', 'PYTEST_PLINTH_SECRET')),
        ('get_configuration', lambda: client.get_configuration('configstore', ['k'])),
        ('try_lock', lambda: client.try_lock('lockstore', unique('lock'), 'owner', 10)),
        ('get_metadata', lambda: client.get_metadata()),
    ]


def test_calls_with_the_token_succeed(secured, make_client):
    client = make_client(secured)
    for _, call in grpc_calls(client):
        call()
    key = unique('key')
    client.save_state('statestore', key, 'kept')
    assert client.get_state('statestore', key).data == b'kept'
    subscription = client.subscribe('pubsub', unique('topic'))
    subscription.close()


@pytest.mark.parametrize('token', [None, 'not-the-token'])
def test_calls_without_the_token_are_unauthenticated(secured, make_client, token):
    # DaprClient() itself succeeds: /v1.0/healthz/outbound needs no token.
    client = make_client(secured, api_token=token)
    for name, call in grpc_calls(client):
        with pytest.raises(grpc.RpcError) as err:
            call()
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED, name
    with pytest.raises(Exception) as err:
        client.subscribe('pubsub', unique('topic'))
    assert 'UNAUTHENTICATED' in str(err.value)


def test_http_invocation_with_the_token(secured, http_app, make_client):
    client = make_client(secured)
    body = uuid.uuid4().hex
    got = client.invoke_method(APP_ID, 'echo/secured', body, http_verb='POST')
    assert got.status_code == 200
    # The app gets APP_API_TOKEN, never the caller's token.
    assert got.json()['headers']['dapr-api-token'] == APP_TOKEN


@pytest.mark.parametrize('token', [None, 'not-the-token'])
def test_http_invocation_without_the_token_is_unauthorized(secured, http_app, make_client, token):
    client = make_client(secured, api_token=token)
    body = uuid.uuid4().hex
    with pytest.raises(DaprHttpError) as err:
        client.invoke_method(APP_ID, 'echo/secured', body, http_verb='POST')
    assert err.value.status_code == 401
    assert not [i for i in http_app.invocations.items() if i['body'] == body]


def test_grpc_invocation_sends_the_app_token(secured, make_client):
    client = make_client(secured, invocation_protocol='grpc')
    got = client.invoke_method(APP_ID, 'echo/secured', 'hi', http_verb='POST')
    assert got.json()['headers']['dapr-api-token'] == APP_TOKEN


def test_no_token_configured_ignores_the_clients(plinth, make_client):
    client = make_client(plinth, api_token='unneeded')
    for _, call in grpc_calls(client):
        call()
