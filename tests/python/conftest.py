"""Run the official Dapr Python SDK against a private Plinth process.

Plinth is started once per session with the embedded default components (all in memory), on
ephemeral ports, in a temporary working directory. Nothing is shared with other runs.
"""

import json
import os
import queue
import signal
import subprocess
import tempfile
import threading

import pytest

APP_ID = 'python-sdk'
SECRET_NAME = 'PYTEST_PLINTH_SECRET'
SECRET_VALUE = 's3cr3t'
STARTUP_TIMEOUT_S = 30
SHUTDOWN_TIMEOUT_S = 15


def _read_lines(stream, lines):
    for line in stream:
        lines.put(line)
    lines.put(None)


@pytest.fixture(scope='session')
def plinth():
    """The `host:port` of a running Plinth's Dapr gRPC API. The SDK's settings point at its
    Dapr HTTP API, which DaprClient() polls (/v1.0/healthz/outbound) before it connects."""
    binary = os.environ.get('PLINTH_BIN')
    if not binary:
        pytest.fail('PLINTH_BIN must name the built plinth binary', pytrace=False)
    if not os.access(binary, os.X_OK):
        pytest.fail(f'PLINTH_BIN={binary} is not an executable file', pytrace=False)
    env = dict(os.environ, **{SECRET_NAME: SECRET_VALUE})
    with tempfile.TemporaryDirectory(prefix='plinth-pytest-') as work:
        proc = subprocess.Popen(
            [
                binary,
                'run',
                '--app-id',
                APP_ID,
                '--grpc-port',
                '0',
                '--dapr-grpc-port',
                '0',
                '--dapr-http-port',
                '0',
                '--admin-port',
                '0',
                '--log-format',
                'json',
            ],
            cwd=work,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        lines = queue.Queue()
        threading.Thread(target=_read_lines, args=(proc.stdout, lines), daemon=True).start()
        try:
            address, http_address = _wait_started(lines)
            from dapr.conf import settings

            settings.DAPR_HTTP_ENDPOINT = f'http://{http_address}'
            yield address
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(timeout=SHUTDOWN_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise
        assert code == 0, f'plinth exited with {code} on SIGTERM'


def _wait_started(lines):
    """Read Plinth's JSON log until `plinth started`; answer the dapr-grpc and dapr-http
    addresses."""
    seen = []
    address = None
    http_address = None
    try:
        while True:
            line = lines.get(timeout=STARTUP_TIMEOUT_S)
            if line is None:
                pytest.fail('plinth exited during startup:\n' + ''.join(seen), pytrace=False)
            seen.append(line)
            try:
                fields = json.loads(line).get('fields', {})
            except ValueError:
                continue
            message = fields.get('message')
            if message == 'listening' and fields.get('listener') == 'dapr-grpc':
                address = fields.get('address')
            elif message == 'listening' and fields.get('listener') == 'dapr-http':
                http_address = fields.get('address')
            elif message == 'plinth started':
                break
    except queue.Empty:
        pytest.fail(
            f'plinth did not start within {STARTUP_TIMEOUT_S} s:\n' + ''.join(seen), pytrace=False
        )
    if not address or not http_address:
        pytest.fail(
            'plinth started without a dapr-grpc or dapr-http listener:\n' + ''.join(seen),
            pytrace=False,
        )
    return address, http_address


@pytest.fixture
def client(plinth):
    from dapr.clients import DaprClient

    with DaprClient(address=plinth) as c:
        yield c
