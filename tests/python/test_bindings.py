"""Bindings through the SDK: the cron input binding (`bindings.cron`, docs/components/
bindings.cron.md) delivered to the gRPC app (`@app.binding`) and to the HTTP app
(`POST /tick`), and DaprClient.invoke_binding on an output binding (`bindings.http`) that
calls the HTTP app."""

import json
import re
import uuid

import grpc
import pytest

from apps import CRON, HOOK

# As Go prints times: 2024-05-01 12:00:00.123456789 +0000 UTC
READ_TIME_UTC = re.compile(r'^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d+)? \+0000 UTC$')


def test_cron_reaches_the_grpc_app(grpc_app):
    # Two firings, so the schedule repeats (every 250 ms).
    first, second = grpc_app.bindings.wait(lambda e: True, count=2)
    for event in (first, second):
        assert event['data'] == b''
        assert READ_TIME_UTC.match(event['metadata']['readTimeUTC']), event
        assert event['metadata']['timeZone'] == 'Local'
    assert first['metadata']['readTimeUTC'] < second['metadata']['readTimeUTC']


def test_cron_reaches_the_http_app(http_app):
    first, second = http_app.bindings.wait(lambda e: True, count=2)
    for event in (first, second):
        assert event['body'] == b''
        # The event's metadata comes as headers (HTTP header names have no case).
        assert READ_TIME_UTC.match(event['headers']['readtimeutc']), event
        assert event['headers']['timezone'] == 'Local'
    assert first['headers']['readtimeutc'] < second['headers']['readtimeutc']


def test_output_binding_calls_the_http_app(http_app, make_client):
    client = make_client(http_app.plinth)
    body = json.dumps({'n': uuid.uuid4().hex})

    got = client.invoke_binding(
        HOOK, 'post', body, binding_metadata={'path': '/hook/in', 'x-custom': 'yes'}
    )

    assert got.json() == {'hooked': body}
    assert got.binding_metadata['statusCode'] == '200'
    (seen,) = http_app.hooks.wait(lambda h: h['body'] == body)
    assert seen['method'] == 'POST'
    assert seen['path'] == '/hook/in'
    assert seen['headers']['x-custom'] == 'yes'


def test_operation_the_binding_lacks_is_invalid(grpc_app, make_client):
    client = make_client(grpc_app.plinth)
    # bindings.cron offers only `delete` (which would stop the schedule).
    with pytest.raises(grpc.RpcError) as err:
        client.invoke_binding(CRON, 'create', '')
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert 'delete' in err.value.details()
