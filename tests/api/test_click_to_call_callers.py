"""Issue 18 point 6, through the real server: API tokens and web users number their ids
separately, so click-to-call's rate limit and idempotency keys are kept per kind of caller: token
N and web user N neither share a limit nor see each other's requests."""

from __future__ import annotations

from typing import Any

import aiohttp

from pbx_bridge.auth.tokens import create_token
from pbx_bridge.web import users as store
from tests.api.conftest import Api, ApiFactory

NUMBER = "+74951234567"


async def _same_ids(api: Api, role: str, extension: str | None) -> tuple[str, str, int]:
    """A web user and an API token of `role` with the same numeric id: (username, token, id)."""
    n = 0

    async def user() -> tuple[str, int]:
        nonlocal n
        n += 1
        async with api.runtime.engine.begin() as conn:
            made = await store.create_user(conn, username=f"{role}{n}", password="pass-word-1",
                                           role=role, extension=extension)
        return made.username, made.id

    async def token() -> tuple[str, int]:
        async with api.runtime.engine.begin() as conn:
            info, value = await create_token(conn, name=f"{role}-twin", role=role, extension=extension)
        return value, info.id

    (username, user_id), (value, token_id) = await user(), await token()
    for _ in range(60):
        if user_id == token_id:
            return username, value, user_id
        if user_id < token_id:
            username, user_id = await user()
        else:
            value, token_id = await token()
    raise AssertionError("could not line up a user id with a token id")


async def _call(session: aiohttp.ClientSession, body: dict[str, Any],
                headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    async with session.post("/api/v1/click-to-call", json=body, headers=headers) as resp:
        return resp.status, await resp.json()


async def test_token_and_web_user_with_the_same_id_have_separate_rate_limits(
        make_api: ApiFactory) -> None:
    api = await make_api(rate_per_minute=0.5, burst=2)
    username, token, same_id = await _same_ids(api, "operator", "101")
    session, csrf = await api.cookie_session(username)
    try:
        body = {"extension": "101", "number": NUMBER}
        bearer = {"Authorization": f"Bearer {token}"}
        statuses = [(await _call(api.client.session, body, bearer))[0] for _ in range(3)]
        assert statuses == [202, 202, 429], (same_id, statuses)  # the token's own limit
        # Web user `same_id` has used nothing yet: its own burst is whole.
        person = [(await _call(session, body, {"X-CSRF-Token": csrf}))[0] for _ in range(3)]
        assert person == [202, 202, 429]
    finally:
        await session.close()


async def test_admin_token_and_admin_user_do_not_share_idempotency_keys(make_api: ApiFactory) -> None:
    api = await make_api()
    username, token, _same_id = await _same_ids(api, "admin", None)
    session, csrf = await api.cookie_session(username)
    try:
        body = {"extension": "101", "number": NUMBER, "idempotency_key": "crm-42"}
        status, by_token = await _call(api.client.session, body, {"Authorization": f"Bearer {token}"})
        assert status == 202
        status, by_person = await _call(session, body, {"X-CSRF-Token": csrf})
        assert status == 202  # a new request, not the token's
        assert by_person["id"] != by_token["id"]
        # Each caller's own repeat still returns its own request.
        status, again = await _call(session, body, {"X-CSRF-Token": csrf})
        assert status == 200 and again["id"] == by_person["id"]
        status, again = await _call(api.client.session, body, {"Authorization": f"Bearer {token}"})
        assert status == 200 and again["id"] == by_token["id"]
    finally:
        await session.close()
