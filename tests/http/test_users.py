"""Removing a user of the HTTP API: their key and tokens are refused from the next request on,
also for a user whose document does not name its key's digest (found among the keys)."""

from __future__ import annotations

import pytest

from mussikon.entrypoints.http.accounts import KEYS, USERS, AccountError, Role
from mussikon.ports.documents import Changes
from tests.http.conftest import Api


async def test_a_removed_user_is_refused_and_the_others_are_not(api: Api) -> None:
    ops = await api.user("ops", Role.OPERATOR, password="a long passphrase")
    other = await api.user("other", Role.OPERATOR)
    token = (await api.client.post("/token", data={"username": "ops",
                                                   "password": "a long passphrase"})
             ).json()["access_token"]
    assert (await api.client.get("/analytics", headers={"Authorization": f"Bearer {token}"})
            ).status_code == 200

    removed = await api.state.accounts.remove("ops")

    assert removed.name == "ops" and removed.role is Role.OPERATOR and removed.has_password
    for credential in (ops.key, token):
        answer = await api.client.get("/analytics",
                                      headers={"Authorization": f"Bearer {credential}"})
        assert answer.status_code == 401
    assert (await api.get(other, "/analytics")).status_code == 200
    assert [u.name for u in await api.state.accounts.users(limit=10)] == ["other"]
    with pytest.raises(AccountError, match="no user 'ops'"):
        await api.state.accounts.remove("ops")


async def test_a_user_whose_document_names_no_key_digest_loses_the_key_too(api: Api) -> None:
    ana = await api.user("ana", Role.OPERATOR)
    documents = api.state.accounts.documents
    doc = await documents.get(USERS, "ana")
    assert doc is not None
    changes = Changes()
    changes.put(USERS, "ana", {k: v for k, v in doc.items() if k not in ("key_digest", "uid")})
    await documents.commit(changes)
    assert (await api.get(ana, "/analytics")).status_code == 200

    await api.state.accounts.remove("ana")

    assert await documents.scan(KEYS) == []
    assert (await api.get(ana, "/analytics")).status_code == 401
