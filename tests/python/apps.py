"""The two apps Plinth calls over its app channel, written with the SDK's app extensions.

`GrpcApp` is a `dapr.ext.grpc.App` (Dapr's AppCallback); `HttpApp` a FastAPI app with
`dapr.ext.fastapi.DaprApp` (Dapr's HTTP app contract). Both subscribe to the same kinds of
topic, serve a method to invoke and take the cron input binding `tick`; everything they
receive goes into an `Inbox` the tests wait on.

Subscriptions are listed by Plinth once, when it starts, so the topic names are fixed for
the session (with a suffix unique to the run); tests tell their events apart by payload.
"""

import json
import uuid
import warnings

from conftest import Inbox, component

PUBSUB = 'pubsub'
CRON = 'tick'
CRON_SCHEDULE = '@every 250ms'
HOOK = 'hook'
RUN = uuid.uuid4().hex[:8]
# Plinth probes both apps (the SDK's gRPC App serves AppCallbackHealthCheck; the HTTP app
# answers GET /healthz) and holds deliveries while a probe fails.
HEALTH_CHECK = ('--enable-app-health-check', '--app-health-probe-interval', '1')
# Delivery settings (docs/pubsub.md) that keep redeliveries fast.
FAST_RETRY = {'retryInitialInterval': '20ms', 'retryMaxInterval': '100ms'}
TWO_ATTEMPTS = dict(FAST_RETRY, maxDeliveryAttempts='2')
# One event in flight: a redelivered event would come before any later one.
IN_ORDER = dict(FAST_RETRY, maxInFlight='1')


def topics(kind):
    """plain: acknowledged; retry: RETRY once, then SUCCESS; drop: DROP with a dead-letter
    topic; exhaust: RETRY always, two attempts, then the dead-letter topic; dead: the
    dead-letter topic, subscribed too; quiet: a handler that answers nothing (the SDK's
    older style), one event in flight; routed (gRPC app): routing rules; declared (HTTP app):
    a declarative Subscription resource, not the app's own."""
    names = ['plain', 'retry', 'drop', 'exhaust', 'dead', 'quiet']
    names.append('routed' if kind == 'grpc' else 'declared')
    return {name: f'{kind}-{name}-{RUN}' for name in names}


def resources(http_app_port=None):
    """The sidecar's components: an in-memory pub/sub, the cron binding and, for the HTTP
    app, an HTTP output binding calling the app back and a declarative subscription."""
    files = {
        'pubsub.yaml': component(PUBSUB, 'pubsub.in-memory'),
        'statestore.yaml': component('statestore', 'state.in-memory'),
        'cron.yaml': component(CRON, 'bindings.cron', schedule=CRON_SCHEDULE),
    }
    if http_app_port is not None:
        files['hook.yaml'] = component(
            HOOK, 'bindings.http', url=f'http://127.0.0.1:{http_app_port}'
        )
        files['subscription.yaml'] = '\n'.join(
            [
                'apiVersion: dapr.io/v2alpha1',
                'kind: Subscription',
                'metadata:',
                '  name: declared',
                'spec:',
                f'  pubsubname: {PUBSUB}',
                f'  topic: {topics("http")["declared"]}',
                '  routes:',
                '    default: /declared',
                '',
            ]
        )
    return files


def wait_ready(plinth, kind):
    """Wait until Plinth has subscribed to every topic of the app and delivers the cron
    binding to it: before that, a published event would find no subscriber."""
    for topic in topics(kind).values():
        plinth.wait_log('subscribed', pubsub=PUBSUB, topic=topic)
    plinth.wait_log('input binding delivering to the app', binding=CRON)


class GrpcApp:
    kind = 'grpc'

    def __init__(self):
        from dapr.ext.grpc import (
            App,
            BindingRequest,
            InvokeMethodRequest,
            InvokeMethodResponse,
            Rule,
            SubscriptionMessage,
            TopicEventResponse,
        )

        self.topics = t = topics(self.kind)
        self.events = Inbox()
        self.invocations = Inbox()
        self.bindings = Inbox()
        self.probes = Inbox()
        self.plinth = None
        self.port = None
        self.app = app = App()
        app.register_health_check(lambda: self.probes.put('probed'))

        def record(handler, event: SubscriptionMessage):
            self.events.put(
                {
                    'handler': handler,
                    'id': event.id(),
                    'topic': event.topic(),
                    'pubsub': event.pubsub_name(),
                    'type': event.type(),
                    'source': event.source(),
                    'content_type': event.data_content_type(),
                    'data': event.data(),
                    'raw': event.raw_data(),
                    'extensions': event.extensions(),
                }
            )

        def attempts(handler, event_id):
            return len(
                [e for e in self.events.items() if e['handler'] == handler and e['id'] == event_id]
            )

        @app.subscribe(PUBSUB, t['plain'])
        def plain(event: SubscriptionMessage) -> TopicEventResponse:
            record('plain', event)
            return TopicEventResponse('success')

        @app.subscribe(PUBSUB, t['retry'], metadata=FAST_RETRY)
        def retry(event: SubscriptionMessage) -> TopicEventResponse:
            record('retry', event)
            first = attempts('retry', event.id()) == 1
            return TopicEventResponse('retry' if first else 'success')

        @app.subscribe(PUBSUB, t['drop'], dead_letter_topic=t['dead'])
        def drop(event: SubscriptionMessage) -> TopicEventResponse:
            record('drop', event)
            return TopicEventResponse('drop')

        @app.subscribe(PUBSUB, t['exhaust'], metadata=TWO_ATTEMPTS, dead_letter_topic=t['dead'])
        def exhaust(event: SubscriptionMessage) -> TopicEventResponse:
            record('exhaust', event)
            return TopicEventResponse('retry')

        @app.subscribe(PUBSUB, t['dead'])
        def dead(event: SubscriptionMessage) -> TopicEventResponse:
            record('dead', event)
            return TopicEventResponse('success')

        # The SDK's older handler style: a cloudevents Event (no SubscriptionMessage
        # annotation) and no answer, which the SDK sends as an empty message (SUCCESS).
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', DeprecationWarning)

            @app.subscribe(PUBSUB, t['quiet'], metadata=IN_ORDER)
            def quiet(event):
                self.events.put(
                    {
                        'handler': 'quiet',
                        'id': event.EventID(),
                        'type': event.EventType(),
                        'content_type': event.ContentType(),
                        'data': json.loads(event.Data()),
                    }
                )

        # Routing rules (CEL), tried by priority: the SDK sends each handler's name as its
        # path. With rules and no default route an event no rule matches is acknowledged
        # without delivery, as in Dapr, so the second rule catches the rest.
        @app.subscribe(PUBSUB, t['routed'], rule=Rule('event.type == "important"', 1))
        def important(event: SubscriptionMessage) -> TopicEventResponse:
            record('important', event)
            return TopicEventResponse('success')

        @app.subscribe(PUBSUB, t['routed'], rule=Rule('has(event.data.order)', 2))
        def routed(event: SubscriptionMessage) -> TopicEventResponse:
            record('routed', event)
            return TopicEventResponse('success')

        @app.method('echo')
        def echo(request: InvokeMethodRequest) -> InvokeMethodResponse:
            seen = {
                'data': request.text(),
                'content_type': request.content_type,
                # The call's gRPC metadata, each key with its list of values.
                'metadata': request.metadata,
            }
            self.invocations.put(seen)
            response = InvokeMethodResponse(json.dumps(seen), 'application/json')
            response.headers = (('x-echo', 'grpc'),)
            return response

        @app.method('fail')
        def fail(request: InvokeMethodRequest):
            raise RuntimeError('the app failed on purpose')

        @app.binding(CRON)
        def tick(request: BindingRequest) -> None:
            self.bindings.put(
                {
                    'data': request.data,
                    'metadata': dict(request.binding_metadata),
                }
            )


class HttpApp:
    kind = 'http'

    def __init__(self):
        from dapr.ext.fastapi import DaprApp
        from fastapi import Body, FastAPI, Request, Response
        from fastapi.responses import JSONResponse

        self.topics = t = topics(self.kind)
        self.events = Inbox()
        self.invocations = Inbox()
        self.bindings = Inbox()
        self.hooks = Inbox()
        self.probes = Inbox()
        self.plinth = None
        self.port = None
        self.app = app = FastAPI()
        dapr_app = DaprApp(app)

        def record(handler, event):
            self.events.put(
                {
                    'handler': handler,
                    'id': event.get('id'),
                    'topic': event.get('topic'),
                    'pubsub': event.get('pubsubname'),
                    'type': event.get('type'),
                    'source': event.get('source'),
                    'content_type': event.get('datacontenttype'),
                    'data': event.get('data'),
                    'data_base64': event.get('data_base64'),
                    'event': event,
                }
            )

        def attempts(handler, event_id):
            return len(
                [e for e in self.events.items() if e['handler'] == handler and e['id'] == event_id]
            )

        # Dapr's HTTP contract: the answer's `status` (SUCCESS, RETRY, DROP) decides.
        @dapr_app.subscribe(pubsub=PUBSUB, topic=t['plain'])
        def plain(event: dict = Body(...)):
            record('plain', event)
            return {'status': 'SUCCESS'}

        @dapr_app.subscribe(pubsub=PUBSUB, topic=t['retry'], metadata=FAST_RETRY)
        def retry(event: dict = Body(...)):
            record('retry', event)
            first = attempts('retry', event['id']) == 1
            return {'status': 'RETRY' if first else 'SUCCESS'}

        @dapr_app.subscribe(pubsub=PUBSUB, topic=t['drop'], dead_letter_topic=t['dead'])
        def drop(event: dict = Body(...)):
            record('drop', event)
            return {'status': 'DROP'}

        @dapr_app.subscribe(
            pubsub=PUBSUB,
            topic=t['exhaust'],
            metadata=TWO_ATTEMPTS,
            dead_letter_topic=t['dead'],
            route='/exhausting',
        )
        def exhaust(event: dict = Body(...)):
            record('exhaust', event)
            return {'status': 'RETRY'}

        @dapr_app.subscribe(pubsub=PUBSUB, topic=t['dead'])
        def dead(event: dict = Body(...)):
            record('dead', event)
            return {'status': 'SUCCESS'}

        # Answers nothing: FastAPI sends 200 with `null`, which acknowledges.
        @dapr_app.subscribe(pubsub=PUBSUB, topic=t['quiet'], metadata=IN_ORDER)
        def quiet(event: dict = Body(...)):
            record('quiet', event)

        # The route of the declarative subscription (resources()): not in /dapr/subscribe.
        @app.post('/declared')
        def declared(event: dict = Body(...)):
            record('declared', event)
            return {'status': 'SUCCESS'}

        # Probed by Plinth (--enable-app-health-check).
        @app.get('/healthz')
        def healthz():
            self.probes.put('probed')
            return Response(status_code=204)

        @app.api_route('/echo/{rest:path}', methods=['GET', 'POST', 'PUT', 'DELETE', 'PATCH'])
        async def echo(rest: str, request: Request):
            seen = {
                'method': request.method,
                'path': request.url.path,
                'query': request.url.query,
                'headers': dict(request.headers),
                'body': (await request.body()).decode(),
            }
            self.invocations.put(seen)
            return JSONResponse(seen, headers={'x-echo': 'http'})

        @app.api_route('/status/{code}', methods=['GET', 'POST'])
        def status(code: int):
            return Response(f'answered {code}', status_code=code, media_type='text/plain')

        # Plinth probes the route with OPTIONS (FastAPI answers 405: the route exists), then
        # POSTs each event with its metadata in headers.
        @app.post(f'/{CRON}')
        async def tick(request: Request):
            self.bindings.put(
                {'body': await request.body(), 'headers': dict(request.headers)}
            )
            return Response(status_code=200)

        # The target of the `hook` output binding (bindings.http).
        @app.api_route('/hook/{rest:path}', methods=['GET', 'POST', 'PUT'])
        async def hook(rest: str, request: Request):
            seen = {
                'method': request.method,
                'path': request.url.path,
                'headers': dict(request.headers),
                'body': (await request.body()).decode(),
            }
            self.hooks.put(seen)
            return JSONResponse({'hooked': seen['body']}, headers={'x-hook': 'yes'})
