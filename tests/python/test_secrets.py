"""Secrets through DaprClient (Dapr's gRPC API): the embedded default `secretstore` (Plinth's
environment), and stores declared in a `--resources-path` directory (an environment store
with a prefix, a JSON file store)."""

import json

import grpc
import pytest

from conftest import SECRET_NAME, SECRET_VALUE, component, run_plinth, unique

FILE_SECRETS = {'db': {'user': 'admin', 'password': 'hunter2'}, 'port': 5432}


@pytest.fixture(scope='module')
def declared(tmp_path_factory):
    """A Plinth whose only components are two secret stores."""
    secrets_file = tmp_path_factory.mktemp('secrets') / 'secrets.json'
    secrets_file.write_text(json.dumps(FILE_SECRETS))
    resources = {
        'env.yaml': component('envsecrets', 'secretstores.local.env', prefix='PYSDK_'),
        'file.yaml': component('filesecrets', 'secretstores.local.file', secretsFile=secrets_file),
    }
    env = {'PYSDK_DB_PASSWORD': 'pa55', 'PYSDK_API_KEY': 'k3y', 'OUTSIDE_PREFIX': 'no'}
    with run_plinth(env=env, resources=resources) as p:
        yield p


def test_embedded_env_store(client):
    assert client.get_secret('secretstore', SECRET_NAME).secret == {SECRET_NAME: SECRET_VALUE}


def test_embedded_env_store_hides_plinth_and_dapr_variables(client):
    # PLINTH_BIN is in Plinth's environment (the tests pass theirs on); it reads as missing.
    for name in ('PLINTH_BIN', unique('MISSING')):
        with pytest.raises(grpc.RpcError) as err:
            client.get_secret('secretstore', name)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_embedded_env_store_bulk_is_empty_without_prefix(client):
    assert client.get_bulk_secret('secretstore').secrets == {}


def test_declared_env_store_with_prefix(declared, make_client):
    client = make_client(declared)
    assert client.get_secret('envsecrets', 'DB_PASSWORD').secret == {'DB_PASSWORD': 'pa55'}
    assert client.get_bulk_secret('envsecrets').secrets == {
        'DB_PASSWORD': {'DB_PASSWORD': 'pa55'},
        'API_KEY': {'API_KEY': 'k3y'},
    }
    with pytest.raises(grpc.RpcError) as err:
        client.get_secret('envsecrets', 'OUTSIDE_PREFIX')
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_declared_file_store(declared, make_client):
    client = make_client(declared)
    assert client.get_secret('filesecrets', 'db:password').secret == {'db:password': 'hunter2'}
    assert client.get_bulk_secret('filesecrets').secrets == {
        'db:user': {'db:user': 'admin'},
        'db:password': {'db:password': 'hunter2'},
        'port': {'port': '5432'},
    }


def test_only_declared_components_exist(declared, make_client):
    client = make_client(declared)
    names = {c.name for c in client.get_metadata().registered_components}
    assert names == {'envsecrets', 'filesecrets'}
    with pytest.raises(grpc.RpcError) as err:
        client.get_secret('secretstore', SECRET_NAME)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
