"""Publishing with DaprClient and delivery to subscribing apps: a gRPC app
(`dapr.ext.grpc.App`, Dapr's AppCallback) and an HTTP app (FastAPI with
`dapr.ext.fastapi.DaprApp`, `/dapr/subscribe` and POSTed CloudEvents). The outcomes follow
docs/pubsub.md: SUCCESS acks, RETRY redelivers, DROP and exhausted retries go to the
dead-letter topic, which the app subscribes to as well."""

import base64
import json
import uuid

import pytest

from apps import PUBSUB
from conftest import APP_ID


@pytest.fixture(params=['grpc_app', 'http_app'])
def app(request):
    return request.getfixturevalue(request.param)


@pytest.fixture
def publisher(app, make_client):
    return make_client(app.plinth)


def payload():
    return {'order': uuid.uuid4().hex}


def handled(handler, **fields):
    return lambda e: e['handler'] == handler and all(e[k] == v for k, v in fields.items())


def test_json_event_is_delivered_as_a_cloudevent(app, publisher):
    data = payload()
    topic = app.topics['plain']
    publisher.publish_event(PUBSUB, topic, json.dumps(data), data_content_type='application/json')

    (event,) = app.events.wait(handled('plain', data=data))
    assert event['id']
    assert event['topic'] == topic
    assert event['pubsub'] == PUBSUB
    assert event['type'] == 'com.dapr.event.sent'
    assert event['source'] == APP_ID
    assert event['content_type'] == 'application/json'


def test_text_event_is_delivered_as_text(app, publisher):
    text = f'hello {uuid.uuid4().hex}'
    publisher.publish_event(PUBSUB, app.topics['plain'], text, data_content_type='text/plain')

    (event,) = app.events.wait(handled('plain', data=text))
    assert event['content_type'] == 'text/plain'


def test_cloudevent_attributes_from_publish_metadata(app, publisher):
    data = payload()
    event_id = uuid.uuid4().hex
    publisher.publish_event(
        PUBSUB,
        app.topics['plain'],
        json.dumps(data),
        data_content_type='application/json',
        publish_metadata={'cloudevent.id': event_id, 'cloudevent.type': 'order.placed'},
    )

    (event,) = app.events.wait(handled('plain', data=data))
    assert event['id'] == event_id
    assert event['type'] == 'order.placed'


def test_bulk_publish_delivers_every_entry(app, publisher):
    entries = [payload() for _ in range(3)]
    got = publisher.publish_events(
        PUBSUB,
        app.topics['plain'],
        [json.dumps(e) for e in entries],
        data_content_type='application/json',
    )
    assert got.failed_entries == []
    for entry in entries:
        app.events.wait(handled('plain', data=entry))


def test_raw_payload_arrives_in_a_cloudevent_built_around_it(app, publisher):
    raw = b'raw-' + uuid.uuid4().hex.encode() + b'\x00\xff'
    publisher.publish_event(PUBSUB, app.topics['plain'], raw, publish_metadata={'rawPayload': 'true'})

    if app.kind == 'grpc':
        (event,) = app.events.wait(lambda e: e['handler'] == 'plain' and e['raw'] == raw)
    else:
        # HTTP apps get it base64-encoded in `data_base64`, as Dapr sends raw payloads.
        encoded = base64.b64encode(raw).decode()
        (event,) = app.events.wait(
            lambda e: e['handler'] == 'plain' and e['data_base64'] == encoded
        )
    assert event['content_type'] == 'application/octet-stream'
    assert event['type'] == 'com.dapr.event.sent'
    assert event['id']


def test_handler_answering_nothing_acknowledges(app, publisher):
    first, second = payload(), payload()
    topic = app.topics['quiet']
    publisher.publish_event(PUBSUB, topic, json.dumps(first), data_content_type='application/json')
    app.events.wait(handled('quiet', data=first))
    publisher.publish_event(PUBSUB, topic, json.dumps(second), data_content_type='application/json')
    app.events.wait(handled('quiet', data=second))
    # One event in flight (maxInFlight: 1): had the first not been acknowledged, it would
    # have been redelivered before the second.
    got = [e['data'] for e in app.events.items() if e['handler'] == 'quiet']
    assert got.count(first) == 1


def test_retry_redelivers_the_same_event(app, publisher):
    data = payload()
    publisher.publish_event(
        PUBSUB, app.topics['retry'], json.dumps(data), data_content_type='application/json'
    )

    first, second = app.events.wait(handled('retry', data=data), count=2)
    assert first['id'] == second['id']


def test_drop_sends_the_event_to_the_dead_letter_topic(app, publisher):
    data = payload()
    publisher.publish_event(
        PUBSUB, app.topics['drop'], json.dumps(data), data_content_type='application/json'
    )

    (dropped,) = app.events.wait(handled('drop', data=data))
    (dead,) = app.events.wait(handled('dead', data=data))
    # The dead-letter topic gets the original envelope: same id, same data.
    assert dead['id'] == dropped['id']
    assert dead['content_type'] == 'application/json'
    assert [e for e in app.events.items() if e['handler'] == 'drop' and e['data'] == data] == [
        dropped
    ]


def test_exhausted_retries_go_to_the_dead_letter_topic(app, publisher):
    data = payload()
    publisher.publish_event(
        PUBSUB, app.topics['exhaust'], json.dumps(data), data_content_type='application/json'
    )

    (dead,) = app.events.wait(handled('dead', data=data))
    # maxDeliveryAttempts: 2 in the subscription's metadata: two attempts, then dead-lettered.
    attempts = [e for e in app.events.items() if e['handler'] == 'exhaust' and e['data'] == data]
    assert len(attempts) == 2
    assert {e['id'] for e in attempts} == {dead['id']}


def test_declarative_subscription_reaches_the_http_app(http_app, make_client):
    publisher = make_client(http_app.plinth)
    data = payload()
    topic = http_app.topics['declared']
    publisher.publish_event(PUBSUB, topic, json.dumps(data), data_content_type='application/json')
    (event,) = http_app.events.wait(handled('declared', data=data))
    assert event['topic'] == topic


def test_routing_rules_pick_the_handler(grpc_app, make_client):
    publisher = make_client(grpc_app.plinth)
    topic = grpc_app.topics['routed']
    important, ordinary = payload(), payload()
    publisher.publish_event(
        PUBSUB,
        topic,
        json.dumps(important),
        data_content_type='application/json',
        publish_metadata={'cloudevent.type': 'important'},
    )
    publisher.publish_event(
        PUBSUB, topic, json.dumps(ordinary), data_content_type='application/json'
    )

    grpc_app.events.wait(handled('important', data=important))
    grpc_app.events.wait(handled('routed', data=ordinary))
    # Each went to one handler only: the first rule that matched.
    got = [(e['handler'], e['data']) for e in grpc_app.events.items()]
    assert got.count(('important', important)) == 1
    assert got.count(('routed', ordinary)) == 1
    assert ('routed', important) not in got


def test_plinth_probes_the_apps_health(app):
    # --enable-app-health-check: the gRPC App's AppCallbackHealthCheck (with a callback
    # registered) or the HTTP app's GET /healthz; deliveries above ran while it was healthy.
    app.probes.wait(lambda p: True)
