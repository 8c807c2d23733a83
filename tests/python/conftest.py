"""Run the official Dapr Python SDK against private Plinth processes.

Every Plinth here is started by `run_plinth` on ephemeral ports, in a temporary working
directory, with its own resources directory (or the embedded default components, all in
memory), and reports what it binds and does in its JSON log, which `Plinth.wait_log` waits
on. Nothing is shared with other runs. The SDK finds the sidecar the way an app does:
through DAPR_GRPC_PORT / DAPR_HTTP_PORT (and DAPR_API_TOKEN), set by `point_sdk_at` (and
`make_client`) for the Plinth a test talks to.

Fixtures:
- `plinth` (session): the embedded default components, no app.
- `grpc_app` / `http_app` (session): a `dapr.ext.grpc.App` or a FastAPI app with
  `dapr.ext.fastapi.DaprApp`, served on a free port, and a Plinth calling it
  (`--app-protocol grpc` / `http`). The apps are defined in apps.py.
- `point_sdk_at`, `make_client`, `client`: the SDK's environment for a given Plinth, a
  `DaprClient` built from it, and one for `plinth`.
- `Inbox`: what an app or a handler received, with bounded waits.
"""

import contextlib
import json
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid

import pytest

APP_ID = 'python-sdk'
SECRET_NAME = 'PYTEST_PLINTH_SECRET'
SECRET_VALUE = 's3cr3t'
STARTUP_TIMEOUT_S = 30
SHUTDOWN_TIMEOUT_S = 15
# How long a test waits for something Plinth does by itself (a delivery, a log line).
EVENT_TIMEOUT_S = 10
# The SDK's DaprClient() polls /v1.0/healthz/outbound this long before giving up (its default
# is 60 s); a Plinth that does not answer fails the test sooner.
HEALTH_TIMEOUT_S = 10

# Variables the SDK reads to find the sidecar; the tests set the ones they need and clear
# the rest, so the caller's environment cannot point the SDK elsewhere.
SDK_ENV = (
    'DAPR_GRPC_ENDPOINT',
    'DAPR_HTTP_ENDPOINT',
    'DAPR_RUNTIME_HOST',
    'DAPR_GRPC_PORT',
    'DAPR_HTTP_PORT',
    'DAPR_API_TOKEN',
    'DAPR_API_METHOD_INVOCATION_PROTOCOL',
    'DAPR_HEALTH_TIMEOUT',
)


def unique(name):
    """A name no other test (or run) uses: keys, topics, lock resources."""
    return f'{name}-{uuid.uuid4().hex}'


def component(name, type_, **metadata):
    """A Component resource as YAML text."""
    lines = [
        'apiVersion: dapr.io/v1alpha1',
        'kind: Component',
        'metadata:',
        f'  name: {name}',
        'spec:',
        f'  type: {type_}',
        '  version: v1',
        '  metadata:' if metadata else '  metadata: []',
    ]
    for key, value in metadata.items():
        lines += [f'  - name: {key}', f'    value: {json.dumps(str(value))}']
    return '\n'.join(lines) + '\n'


class Plinth:
    """A running Plinth: its addresses, and its JSON log as it is written."""

    def __init__(self, proc, api_token=None):
        self.proc = proc
        self.api_token = api_token
        self.grpc_address = None  # the dapr-grpc listener, host:port
        self.layotto_address = None  # the grpc listener (Layotto's Runtime), host:port
        self.http_address = None  # the dapr-http listener, host:port
        self._records = []
        self._text = []
        self._changed = threading.Condition()
        self._ended = False
        threading.Thread(target=self._read, daemon=True).start()

    @property
    def http_port(self):
        return int(self.http_address.rsplit(':', 1)[1])

    @property
    def grpc_port(self):
        return int(self.grpc_address.rsplit(':', 1)[1])

    def _read(self):
        for line in self.proc.stdout:
            try:
                fields = json.loads(line).get('fields', {})
            except ValueError:
                fields = {}
            with self._changed:
                self._text.append(line)
                self._records.append(fields)
                self._changed.notify_all()
        with self._changed:
            self._ended = True
            self._changed.notify_all()

    def output(self):
        with self._changed:
            return ''.join(self._text)

    def wait_log(self, message, timeout=EVENT_TIMEOUT_S, **fields):
        """The first log record (already written or to come) with this message and these
        fields; fails the test if none comes within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        seen = 0
        with self._changed:
            while True:
                for record in self._records[seen:]:
                    if record.get('message') == message and all(
                        str(record.get(k)) == str(v) for k, v in fields.items()
                    ):
                        return record
                seen = len(self._records)
                remaining = deadline - time.monotonic()
                if self._ended or remaining <= 0:
                    state = 'exited' if self._ended else f'wrote nothing like it in {timeout} s'
                    pytest.fail(
                        f'waiting for log {message!r} {fields}: plinth {state}:\n'
                        + ''.join(self._text),
                        pytrace=False,
                    )
                self._changed.wait(remaining)

    def _wait_started(self):
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        seen = 0
        with self._changed:
            while True:
                for record in self._records[seen:]:
                    if record.get('message') == 'listening':
                        listener = record.get('listener')
                        if listener == 'dapr-grpc':
                            self.grpc_address = record.get('address')
                        elif listener == 'grpc':
                            self.layotto_address = record.get('address')
                        elif listener == 'dapr-http':
                            self.http_address = record.get('address')
                    elif record.get('message') == 'plinth started':
                        if not (self.grpc_address and self.http_address and self.layotto_address):
                            pytest.fail(
                                'plinth started without its grpc, dapr-grpc and dapr-http '
                                'listeners:\n' + ''.join(self._text),
                                pytrace=False,
                            )
                        return
                seen = len(self._records)
                remaining = deadline - time.monotonic()
                if self._ended:
                    pytest.fail(
                        'plinth exited during startup:\n' + ''.join(self._text), pytrace=False
                    )
                if remaining <= 0:
                    pytest.fail(
                        f'plinth did not start within {STARTUP_TIMEOUT_S} s:\n'
                        + ''.join(self._text),
                        pytrace=False,
                    )
                self._changed.wait(remaining)

    def sdk_env(self, api_token=None, invocation_protocol='http'):
        """What the SDK reads to reach this Plinth (DAPR_API_TOKEN only when given)."""
        env = {
            'DAPR_RUNTIME_HOST': '127.0.0.1',
            'DAPR_GRPC_PORT': str(self.grpc_port),
            'DAPR_HTTP_PORT': str(self.http_port),
            'DAPR_API_METHOD_INVOCATION_PROTOCOL': invocation_protocol,
            'DAPR_HEALTH_TIMEOUT': str(HEALTH_TIMEOUT_S),
        }
        if api_token is not None:
            env['DAPR_API_TOKEN'] = api_token
        return env


@contextlib.contextmanager
def run_plinth(*args, env=None, resources=None, app_id=APP_ID):
    """Start `plinth run` with `args` (after the ports and log flags), extra environment
    `env`, and, when `resources` (file name -> YAML text) is given, those resources in a
    `--resources-path` directory. Yields a started `Plinth`; on exit sends SIGTERM and
    checks that Plinth exits 0."""
    binary = os.environ.get('PLINTH_BIN')
    if not binary:
        pytest.fail('PLINTH_BIN must name the built plinth binary', pytrace=False)
    if not os.access(binary, os.X_OK):
        pytest.fail(f'PLINTH_BIN={binary} is not an executable file', pytrace=False)
    proc_env = {k: v for k, v in os.environ.items() if k != 'DAPR_API_TOKEN'}
    proc_env[SECRET_NAME] = SECRET_VALUE
    proc_env.update(env or {})
    with tempfile.TemporaryDirectory(prefix='plinth-pytest-') as work:
        command = [
            binary,
            'run',
            '--app-id',
            app_id,
            '--grpc-port',
            '0',
            '--dapr-grpc-port',
            '0',
            '--dapr-http-port',
            '0',
            '--admin-port',
            '0',
            '--functions-port',
            '0',
            '--mesh-port',
            '0',
            '--log-format',
            'json',
        ]
        if resources is not None:
            path = os.path.join(work, 'resources')
            os.mkdir(path)
            for name, text in resources.items():
                with open(os.path.join(path, name), 'w') as f:
                    f.write(text)
            command += ['--resources-path', path]
        proc = subprocess.Popen(
            command + list(args),
            cwd=work,
            env=proc_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        plinth = Plinth(proc, api_token=proc_env.get('DAPR_API_TOKEN'))
        try:
            plinth._wait_started()
            yield plinth
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(timeout=SHUTDOWN_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise
        assert code == 0, f'plinth exited with {code} on SIGTERM:\n{plinth.output()}'


def free_port():
    """A port nothing listens on right now (for servers that only take a port number)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.fixture(scope='session')
def plinth():
    """A Plinth with the embedded default components and no app."""
    with run_plinth() as p:
        yield p


_DEFAULT = object()


@pytest.fixture
def point_sdk_at(monkeypatch):
    """point_sdk_at(plinth, api_token=..., invocation_protocol='http'|'grpc'): set the
    environment the SDK reads so that clients made afterwards reach `plinth`. The token
    defaults to the one Plinth was started with. The environment stays set for the rest of
    the test: the SDK reads some settings (the HTTP port and the token of invoke_method) at
    every call, so the last call of this function decides them."""

    def point(plinth, api_token=_DEFAULT, invocation_protocol='http'):
        for name in SDK_ENV:
            monkeypatch.delenv(name, raising=False)
        token = plinth.api_token if api_token is _DEFAULT else api_token
        for name, value in plinth.sdk_env(token, invocation_protocol).items():
            monkeypatch.setenv(name, value)

    return point


@pytest.fixture
def make_client(point_sdk_at):
    """make_client(plinth, ...): a DaprClient built from the environment point_sdk_at sets
    (same arguments), closed after the test."""
    from dapr.clients import DaprClient

    made = []

    def make(plinth, api_token=_DEFAULT, invocation_protocol='http'):
        point_sdk_at(plinth, api_token, invocation_protocol)
        c = DaprClient()
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


@pytest.fixture
def client(plinth, make_client):
    """A DaprClient for the embedded-components Plinth."""
    return make_client(plinth)


class Inbox:
    """What an app received, in order, for tests to wait on with a bounded wait."""

    def __init__(self):
        self._items = []
        self._changed = threading.Condition()

    def put(self, item):
        with self._changed:
            self._items.append(item)
            self._changed.notify_all()

    def items(self):
        with self._changed:
            return list(self._items)

    def wait(self, predicate, count=1, timeout=EVENT_TIMEOUT_S):
        """The first `count` items matching `predicate`, once there are that many; fails the
        test if they do not arrive within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                matching = [i for i in self._items if predicate(i)]
                if len(matching) >= count:
                    return matching[:count]
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    pytest.fail(
                        f'waited {timeout} s for {count} item(s), got {len(matching)}: '
                        f'{matching!r}',
                        pytrace=False,
                    )
                self._changed.wait(remaining)


@pytest.fixture(scope='session')
def grpc_app():
    """The gRPC app of apps.py (dapr.ext.grpc.App) and a Plinth calling it."""
    import apps

    app = apps.GrpcApp()
    port = free_port()
    thread = threading.Thread(target=app.app.run, args=(port, '127.0.0.1'), daemon=True)
    thread.start()
    try:
        with run_plinth(
            '--app-port',
            str(port),
            '--app-protocol',
            'grpc',
            *apps.HEALTH_CHECK,
            resources=apps.resources(),
        ) as p:
            apps.wait_ready(p, 'grpc')
            app.plinth = p
            app.port = port
            yield app
    finally:
        app.app.stop()
        thread.join(timeout=SHUTDOWN_TIMEOUT_S)


@pytest.fixture(scope='session')
def http_app():
    """The FastAPI app of apps.py (dapr.ext.fastapi.DaprApp), served by uvicorn on a free
    port, and a Plinth calling it."""
    import uvicorn

    import apps

    app = apps.HttpApp()
    # The socket is bound before Plinth starts, so Plinth's first call queues in the backlog
    # instead of being refused while uvicorn starts.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(('127.0.0.1', 0))
    sock.listen(64)
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app.app, log_level='warning', access_log=False, lifespan='off')
    )
    thread = threading.Thread(target=server.run, kwargs={'sockets': [sock]}, daemon=True)
    thread.start()
    try:
        with run_plinth(
            '--app-port',
            str(port),
            '--app-protocol',
            'http',
            *apps.HEALTH_CHECK,
            resources=apps.resources(http_app_port=port),
        ) as p:
            apps.wait_ready(p, 'http')
            app.plinth = p
            app.port = port
            yield app
    finally:
        server.should_exit = True
        thread.join(timeout=SHUTDOWN_TIMEOUT_S)
        sock.close()
