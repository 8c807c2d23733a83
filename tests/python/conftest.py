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


def _bypass_http_health_wait():
    # DaprClient() calls DaprHealth.wait_for_sidecar(), which polls Dapr's HTTP API
    # (/v1.0/healthz/outbound) and raises once DAPR_HEALTH_TIMEOUT has passed; no setting
    # turns it off. Plinth does not serve Dapr's HTTP API yet, so the probe can only fail.
    # The fixture below already waits for Plinth's own "plinth started" line, after which
    # every listener is bound, so the probe adds nothing here.
    from dapr.clients.health import DaprHealth

    DaprHealth.wait_for_sidecar = staticmethod(lambda: None)


def _read_lines(stream, lines):
    for line in stream:
        lines.put(line)
    lines.put(None)


@pytest.fixture(scope='session')
def plinth():
    """The `host:port` of a running Plinth's Dapr gRPC API."""
    binary = os.environ.get('PLINTH_BIN')
    if not binary:
        pytest.fail('PLINTH_BIN must name the built plinth binary', pytrace=False)
    if not os.access(binary, os.X_OK):
        pytest.fail(f'PLINTH_BIN={binary} is not an executable file', pytrace=False)
    _bypass_http_health_wait()

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
            address = _wait_started(lines)
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
    """Read Plinth's JSON log until `plinth started`; answer the dapr-grpc address."""
    seen = []
    address = None
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
            elif message == 'plinth started':
                break
    except queue.Empty:
        pytest.fail(
            f'plinth did not start within {STARTUP_TIMEOUT_S} s:\n' + ''.join(seen), pytrace=False
        )
    if not address:
        pytest.fail('plinth started without a dapr-grpc listener:\n' + ''.join(seen), pytrace=False)
    return address


@pytest.fixture
def client(plinth):
    from dapr.clients import DaprClient

    with DaprClient(address=plinth) as c:
        yield c
