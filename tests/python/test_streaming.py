"""Streaming subscriptions (Dapr's SubscribeTopicEventsAlpha1) with DaprClient.subscribe and
subscribe_with_handler, on the embedded in-memory pub/sub: no app involved."""

import json
import threading
import uuid

import pytest
from dapr.clients.grpc._response import TopicEventResponse
from dapr.common.pubsub.subscription import StreamCancelledError, StreamInactiveError

from conftest import APP_ID, Inbox, unique

PUBSUB = 'pubsub'
FAST_RETRY = {'retryInitialInterval': '20ms', 'retryMaxInterval': '100ms'}


def read_into(subscription, inbox):
    """Read a subscription's messages into `inbox` on a thread, until it is closed."""

    def run():
        try:
            for message in subscription:
                inbox.put(message)
        except (StreamInactiveError, StreamCancelledError):
            pass

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def publish_json(client, topic, data):
    client.publish_event(PUBSUB, topic, json.dumps(data), data_content_type='application/json')


def test_subscribe_receives_events_and_acknowledges_them(client):
    topic = unique('stream')
    subscription = client.subscribe(PUBSUB, topic)
    inbox = Inbox()
    thread = read_into(subscription, inbox)
    try:
        first, second = {'n': 1, 'id': uuid.uuid4().hex}, {'n': 2, 'id': uuid.uuid4().hex}
        publish_json(client, topic, first)
        publish_json(client, topic, second)

        got = inbox.wait(lambda m: True, count=2)
        assert sorted((m.data() for m in got), key=lambda d: d['n']) == [first, second]
        for message in got:
            assert message.topic() == topic
            assert message.pubsub_name() == PUBSUB
            assert message.type() == 'com.dapr.event.sent'
            assert message.source() == APP_ID
            assert message.data_content_type() == 'application/json'
            subscription.respond_success(message)
        assert got[0].id() != got[1].id()
    finally:
        subscription.close()
        thread.join(timeout=5)
    assert not thread.is_alive()


def test_handler_retry_redelivers(client):
    topic = unique('stream-retry')
    inbox = Inbox()

    def handler(message):
        inbox.put(message)
        seen = [m for m in inbox.items() if m.id() == message.id()]
        return TopicEventResponse('retry' if len(seen) == 1 else 'success')

    close = client.subscribe_with_handler(PUBSUB, topic, handler, metadata=FAST_RETRY)
    try:
        data = {'id': uuid.uuid4().hex}
        publish_json(client, topic, data)
        first, second = inbox.wait(lambda m: m.data() == data, count=2)
        assert first.id() == second.id()
    finally:
        close()


def test_drop_goes_to_the_dead_letter_topic(client):
    topic, dead_letter = unique('stream-drop'), unique('stream-dead')
    dropped, dead = Inbox(), Inbox()

    def drop(message):
        dropped.put(message)
        return TopicEventResponse('drop')

    def keep(message):
        dead.put(message)
        return TopicEventResponse('success')

    close_dead = client.subscribe_with_handler(PUBSUB, dead_letter, keep)
    close = client.subscribe_with_handler(PUBSUB, topic, drop, dead_letter_topic=dead_letter)
    try:
        data = {'id': uuid.uuid4().hex}
        publish_json(client, topic, data)
        (original,) = dropped.wait(lambda m: m.data() == data)
        (dead_lettered,) = dead.wait(lambda m: m.data() == data)
        assert dead_lettered.id() == original.id()
        assert dead_lettered.data_content_type() == 'application/json'
    finally:
        close()
        close_dead()


def test_unanswered_event_goes_to_the_next_subscriber(client):
    topic = unique('stream-handover')
    first = client.subscribe(PUBSUB, topic)
    inbox = Inbox()
    thread = read_into(first, inbox)
    data = {'id': uuid.uuid4().hex}
    try:
        publish_json(client, topic, data)
        (unanswered,) = inbox.wait(lambda m: m.data() == data)
    finally:
        first.close()
        thread.join(timeout=5)

    # The same app id: the same consumer group, which gets the event back.
    second = client.subscribe(PUBSUB, topic)
    inbox = Inbox()
    thread = read_into(second, inbox)
    try:
        (again,) = inbox.wait(lambda m: m.data() == data)
        assert again.id() == unanswered.id()
        second.respond_success(again)
    finally:
        second.close()
        thread.join(timeout=5)


def test_subscribing_to_an_unknown_pubsub_fails(client):
    with pytest.raises(Exception) as err:
        client.subscribe(unique('no-such-pubsub'), unique('topic'))
    assert 'no-such-pubsub' in str(err.value)
