"""The live feed over TCP from `mussikon serve`, as a browser's EventSource reads it: each
stored event with its position as the id, and a reconnection with Last-Event-ID resuming
right after that event (no browser needed)."""

from __future__ import annotations

import json
from typing import Any

import httpx

from tests.browser.conftest import OPERATOR_PASSWORD, Served


async def _events(client: httpx.AsyncClient, headers: dict[str, str], count: int
                  ) -> list[tuple[int, dict[str, Any]]]:
    """The first `count` events the stream sends (id, data)."""
    out: list[tuple[int, dict[str, Any]]] = []
    async with client.stream("GET", "/dashboard/events", headers=headers) as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        event_id = 0
        async for line in stream.aiter_lines():
            if line.startswith("id: "):
                event_id = int(line[4:])
            elif line.startswith("data: "):
                out.append((event_id, json.loads(line[6:])))
                if len(out) == count:
                    break
    return out


async def test_the_feed_resumes_after_the_last_event_id(served: Served) -> None:
    musician = {"Authorization": f"Bearer {served.musician_key}"}
    organizer = {"Authorization": f"Bearer {served.organizer_key}"}
    async with httpx.AsyncClient(base_url=served.url, timeout=10) as client:
        assert (await client.post("/musicians", headers=musician, json={
            "email": "ana@musicos.example", "name": "Ana", "genres": ["Jazz"],
            "location": "Santo Domingo"})).status_code == 201
        assert (await client.post("/organizers", headers=organizer, json={
            "email": "booking@casa.example", "name": "Casa",
            "payment_source": ""})).status_code == 201
        login = await client.post("/dashboard/login", data={
            "username": "op", "password": OPERATOR_PASSWORD})
        assert login.status_code == 303
        first = await _events(client, {}, 2)
        assert [(i, e["type"]) for i, e in first] == [
            (1, "MusicianRegisteredEvent"), (2, "OrganizerRegisteredEvent")]
        assert first[0][1]["summary"] == "Ana"
        resumed = await _events(client, {"Last-Event-ID": "1"}, 1)
        assert [(i, e["type"]) for i, e in resumed] == [(2, "OrganizerRegisteredEvent")]
        refused = await client.get("/dashboard/events", headers={"Last-Event-ID": "x"})
        assert refused.status_code == 422
