"""Configuration through DaprClient (Dapr's gRPC API) on the embedded in-memory store
(`configstore`): get, subscribe, unsubscribe.

Dapr's API only reads configuration; the in-memory store is written through Layotto's
SaveConfiguration and DeleteConfiguration (docs/api/layotto.md), which the tests call with
message types Plinth describes over gRPC reflection (layotto.py), so that values change
while the SDK is subscribed."""

import pytest

from conftest import Inbox, unique
from layotto import Layotto

STORE = 'configstore'


@pytest.fixture
def layotto(plinth):
    with Layotto(plinth.layotto_address, plinth.api_token) as l:
        yield l


def test_missing_keys_are_empty(client):
    assert client.get_configuration(STORE, [unique('config')]).items == {}


def test_get_items_written_through_layotto(client, layotto):
    first, second, missing = unique('config'), unique('config'), unique('config')
    layotto.save_configuration(STORE, {first: 'one', second: '{"n": 2}'})

    got = client.get_configuration(STORE, [first, second, missing]).items
    assert set(got) == {first, second}
    assert got[first].value == 'one'
    assert got[second].json() == {'n': 2}
    assert got[first].version and got[second].version

    # No keys: every item of the app.
    assert {first, second} <= set(client.get_configuration(STORE, []).items)


def test_subscribe_receives_changes_until_unsubscribed(client, layotto):
    key, other = unique('config'), unique('config')
    layotto.save_configuration(STORE, {key: 'v1'})
    updates = Inbox()
    sub_id = client.subscribe_configuration(
        STORE, [key], lambda id_, response: updates.put((id_, response.items))
    )
    assert sub_id

    layotto.save_configuration(STORE, {key: 'v2', other: 'not watched'})
    ((id_, items),) = updates.wait(lambda u: key in u[1] and u[1][key].value == 'v2')
    assert id_ == sub_id
    assert other not in items
    v2_version = items[key].version
    assert v2_version

    layotto.save_configuration(STORE, {key: 'v3'})
    ((_, items),) = updates.wait(lambda u: key in u[1] and u[1][key].value == 'v3')
    assert items[key].version != v2_version

    # A deleted item comes with an empty value.
    layotto.delete_configuration(STORE, [key])
    updates.wait(lambda u: key in u[1] and u[1][key].value == '')
    assert all(other not in items for _, items in updates.items())

    assert client.unsubscribe_configuration(STORE, sub_id) is True
    assert client.unsubscribe_configuration(STORE, sub_id) is False

    # Unsubscribed: a later change reaches a new subscriber, and not the old handler.
    seen = len(updates.items())
    later = Inbox()
    later_id = client.subscribe_configuration(
        STORE, [key], lambda id_, response: later.put(response.items)
    )
    layotto.save_configuration(STORE, {key: 'v4'})
    later.wait(lambda items: key in items and items[key].value == 'v4')
    assert len(updates.items()) == seen
    assert client.unsubscribe_configuration(STORE, later_id) is True


def test_unknown_store_fails(client):
    with pytest.raises(Exception) as err:
        client.get_configuration(unique('no-such-store'), ['key'])
    assert 'no-such-store' in str(err.value)
