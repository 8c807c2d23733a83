"""Service invocation with DaprClient.invoke_method, to the sidecar's own app (docs/api/
invocation.md): over Dapr's HTTP API (`/v1.0/invoke/...`, the SDK's default) and over
Dapr's gRPC API (`InvokeService`, DAPR_API_METHOD_INVOCATION_PROTOCOL=grpc), each to the
HTTP app (FastAPI) and to the gRPC app (`@app.method`)."""

import json
import uuid

import grpc
import pytest
from dapr.clients.exceptions import DaprHttpError

from conftest import APP_ID

# The SDK's gRPC invoke_method warns that it is deprecated in favour of gRPC proxying (which
# is for calling other gRPC services, not the app's methods); it is still Dapr's InvokeService.
# Its `metadata` argument (headers for the app) warns too; it is the only way to send some.
pytestmark = [
    pytest.mark.filterwarnings('ignore:invoke_method with protocol gRPC is deprecated'),
    pytest.mark.filterwarnings('ignore:metadata argument is deprecated'),
]


def test_http_api_to_http_app(http_app, make_client):
    client = make_client(http_app.plinth)
    body = json.dumps({'n': uuid.uuid4().hex})

    got = client.invoke_method(
        APP_ID,
        'echo/orders/1',
        body,
        content_type='application/json',
        metadata=(('x-trace', 'abc'),),
        http_verb='PUT',
        http_querystring=(('page', '2'), ('tag', 'a b')),
    )

    assert got.status_code == 200
    # The SDK gives headers as lists of values.
    assert got.headers['x-echo'] == ['http']
    assert got.content_type == 'application/json'
    seen = got.json()
    assert seen['method'] == 'PUT'
    assert seen['path'] == '/echo/orders/1'
    assert seen['query'] == 'page=2&tag=a+b'
    assert seen['body'] == body
    assert seen['headers']['content-type'] == 'application/json'
    assert seen['headers']['x-trace'] == 'abc'
    assert seen['headers']['dapr-caller-app-id'] == APP_ID
    assert seen['headers']['dapr-callee-app-id'] == APP_ID
    # The SDK's default verb is GET.
    assert client.invoke_method(APP_ID, 'echo/x', '').json()['method'] == 'GET'


def test_http_api_passes_the_apps_error_status(http_app, make_client):
    client = make_client(http_app.plinth)
    with pytest.raises(DaprHttpError) as err:
        client.invoke_method(APP_ID, 'status/418', '', http_verb='POST')
    assert err.value.status_code == 418
    assert err.value.raw_response_bytes == b'answered 418'


def test_grpc_api_to_http_app(http_app, make_client):
    client = make_client(http_app.plinth, invocation_protocol='grpc')
    body = json.dumps({'n': uuid.uuid4().hex})

    got = client.invoke_method(
        APP_ID,
        'echo/items',
        body,
        content_type='application/json',
        metadata=(('x-trace', 'def'),),
        http_verb='PATCH',
        http_querystring=(('q', '1'),),
    )

    assert got.content_type == 'application/json'
    # Over gRPC the app's response headers come back as response metadata (a list per key).
    assert got.headers['x-echo'] == ['http']
    seen = json.loads(got.data)
    assert seen['method'] == 'PATCH'
    assert seen['path'] == '/echo/items'
    assert seen['query'] == 'q=1'
    assert seen['body'] == body
    assert seen['headers']['x-trace'] == 'def'
    # Without a verb, gRPC callers POST.
    assert json.loads(client.invoke_method(APP_ID, 'echo/x', 'hi').data)['method'] == 'POST'


def test_grpc_api_maps_the_apps_error_status(http_app, make_client):
    client = make_client(http_app.plinth, invocation_protocol='grpc')
    for status, code in [(404, grpc.StatusCode.NOT_FOUND), (500, grpc.StatusCode.INTERNAL)]:
        with pytest.raises(grpc.RpcError) as err:
            client.invoke_method(APP_ID, f'status/{status}', '', http_verb='GET')
        assert err.value.code() == code
        assert f'answered {status}' in err.value.details()


def test_grpc_api_to_grpc_app(grpc_app, make_client):
    client = make_client(grpc_app.plinth, invocation_protocol='grpc')
    text = f'hello {uuid.uuid4().hex}'

    got = client.invoke_method(
        APP_ID, 'echo', text, content_type='text/plain', metadata=(('x-trace', 'ghi'),)
    )

    assert got.content_type == 'application/json'
    assert got.headers['x-echo'] == ['grpc']
    seen = json.loads(got.data)
    assert seen['data'] == text
    assert seen['content_type'] == 'text/plain'
    assert seen['metadata']['x-trace'] == ['ghi']


def test_http_api_to_grpc_app(grpc_app, make_client):
    client = make_client(grpc_app.plinth)
    text = f'hello {uuid.uuid4().hex}'

    got = client.invoke_method(
        APP_ID,
        'echo',
        text,
        content_type='text/plain',
        metadata=(('x-trace', 'jkl'),),
        http_verb='POST',
    )

    assert got.status_code == 200
    assert got.content_type == 'application/json'
    # The gRPC app's response metadata comes back as HTTP headers.
    assert got.headers['x-echo'] == ['grpc']
    seen = got.json()
    assert seen['data'] == text
    assert seen['content_type'] == 'text/plain'
    assert seen['metadata']['x-trace'] == ['jkl']


def test_grpc_app_errors_come_back(grpc_app, make_client):
    client = make_client(grpc_app.plinth, invocation_protocol='grpc')
    # A method that raises: the app's status (UNKNOWN) comes back unchanged.
    with pytest.raises(grpc.RpcError) as err:
        client.invoke_method(APP_ID, 'fail', '')
    assert err.value.code() == grpc.StatusCode.UNKNOWN
    # A method the app does not serve: the SDK's App answers UNIMPLEMENTED.
    with pytest.raises(grpc.RpcError) as err:
        client.invoke_method(APP_ID, 'no-such-method', '')
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_grpc_app_errors_over_http(grpc_app, make_client):
    client = make_client(grpc_app.plinth)
    with pytest.raises(DaprHttpError) as err:
        client.invoke_method(APP_ID, 'fail', '', http_verb='POST')
    assert err.value.status_code == 500
    with pytest.raises(DaprHttpError) as err:
        client.invoke_method(APP_ID, 'no-such-method', '', http_verb='POST')
    assert err.value.status_code == 501


@pytest.mark.parametrize('protocol', ['http', 'grpc'])
def test_another_app_id_is_unavailable(http_app, make_client, protocol):
    client = make_client(http_app.plinth, invocation_protocol=protocol)
    other = f'other-{uuid.uuid4().hex[:8]}'
    if protocol == 'http':
        with pytest.raises(DaprHttpError) as err:
            client.invoke_method(other, 'echo/x', '', http_verb='GET')
        assert err.value.status_code == 503
        assert other in err.value.message
    else:
        with pytest.raises(grpc.RpcError) as err:
            client.invoke_method(other, 'echo/x', '', http_verb='GET')
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert other in err.value.details()
