"""The SDK's asyncio client (`dapr.aio.clients.DaprClient`, grpc.aio) against the same
Dapr gRPC API."""

import asyncio
import json
import uuid

import pytest
from dapr.aio.clients import DaprClient

from conftest import APP_ID, EVENT_TIMEOUT_S, unique


def run(coroutine):
    """Run a test's coroutine with a bound on the whole of it."""
    return asyncio.run(asyncio.wait_for(coroutine, EVENT_TIMEOUT_S))


def test_state_publish_and_streaming_subscribe(plinth, point_sdk_at):
    point_sdk_at(plinth)
    key, topic = unique('async'), unique('async-topic')
    data = {'id': uuid.uuid4().hex}

    async def scenario():
        async with DaprClient() as client:
            await client.save_state('statestore', key, 'async value')
            got = await client.get_state('statestore', key)
            assert got.data == b'async value'

            subscription = await client.subscribe('pubsub', topic)
            try:
                await client.publish_event(
                    'pubsub', topic, json.dumps(data), data_content_type='application/json'
                )
                message = await subscription.next_message()
                assert message.data() == data
                assert message.topic() == topic
                await subscription.respond_success(message)
            finally:
                await subscription.close()

    run(scenario())


@pytest.mark.filterwarnings('ignore:metadata argument is deprecated')
def test_invoke_the_grpc_app(grpc_app, point_sdk_at):
    point_sdk_at(grpc_app.plinth)
    text = f'async {uuid.uuid4().hex}'

    async def scenario():
        async with DaprClient() as client:
            return await client.invoke_method(APP_ID, 'echo', text, content_type='text/plain')

    got = run(scenario())
    seen = json.loads(got.data)
    assert seen['data'] == text
    assert seen['content_type'] == 'text/plain'
