"""An operator uses the dashboard in chromium: logs in, watches a musician registered through
the API arrive in the live feed, opens the flow of an application, retries a dead-letter
group and sees it leave the list; a musician cannot open the dashboard. Every page is
photographed at a laptop's and a phone's size."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from playwright.async_api import (
    Browser,
    BrowserContext,
    Page,
    ViewportSize,
    async_playwright,
    expect,
)

from tests.browser.conftest import (
    CHROMIUM_ARGS,
    MUSICIAN_PASSWORD,
    OPERATOR_PASSWORD,
    Served,
)
from tests.conftest import MailBox

pytestmark = pytest.mark.browser

LAPTOP: ViewportSize = {"width": 1366, "height": 860}
PHONE: ViewportSize = {"width": 390, "height": 844}


async def shoot(page: Page, folder: Path, name: str) -> None:
    await page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


async def on_phone(browser: Browser, laptop: BrowserContext, url: str, folder: Path,
                   pages: dict[str, str]) -> None:
    """The same pages, logged in as the same operator, at a phone's size."""
    phone = await browser.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True,
                                      has_touch=True, storage_state=await laptop.storage_state())
    page = await phone.new_page()
    for name, path in pages.items():
        await page.goto(url + path)
        await shoot(page, folder, f"phone-{name}")
    await phone.close()


async def test_an_operator_watches_the_flow_and_retries_dead_letters(
        chromium: Path, served: Served, screenshots: Path) -> None:
    url = served.url
    ana = {"Authorization": f"Bearer {served.musician_key}"}
    casa = {"Authorization": f"Bearer {served.organizer_key}"}
    async with async_playwright() as playwright, httpx.AsyncClient(base_url=url) as api:
        browser = await playwright.chromium.launch(executable_path=str(chromium),
                                                   args=CHROMIUM_ARGS)
        laptop = await browser.new_context(viewport=LAPTOP)
        page = await laptop.new_page()

        # Not logged in: the login form, with 401.
        answer = await page.goto(f"{url}/dashboard")
        assert answer is not None and answer.status == 401
        await shoot(page, screenshots, "laptop-login")
        await page.get_by_label("User name").fill("op")
        await page.get_by_label("Password").fill(OPERATOR_PASSWORD)
        await page.get_by_role("button", name="Log in").click()
        await expect(page.locator("#feed-state")).to_have_text("live")

        # A musician registered through the API appears in the feed, without a reload; the
        # name from outside is shown as text.
        registered = await api.post("/musicians", headers=ana, json={
            "email": "ana@musicos.example", "name": "Ana <b>Pérez</b>", "genres": ["Jazz"],
            "location": "Santo Domingo"})
        assert registered.status_code == 201, registered.text
        row = page.locator("#feed li[data-type=MusicianRegisteredEvent]")
        await expect(row).to_have_count(1)
        await expect(row.locator(".summary")).to_have_text("Ana <b>Pérez</b>")
        assert await page.locator("#feed b").count() == 0

        # An application, accepted: its flow runs through the booking saga.
        assert (await api.post("/organizers", headers=casa, json={
            "email": "booking@casa.example", "name": "Casa de Teatro",
            "payment_source": "tok_visa"})).status_code == 201
        gig = await api.post("/gigs", headers=casa, json={
            "title": "Noche de Jazz", "location": "Santo Domingo", "genre": "Jazz",
            "budget": "1500.00",
            "event_date": (datetime.now(UTC) + timedelta(days=30)).isoformat()})
        assert gig.status_code == 201, gig.text
        applied = await api.post(f"/gigs/{gig.json()['id']}/applications", headers=ana,
                                 json={"message": "Trío", "proposed_fee": "1200.00"})
        assert applied.status_code == 201, applied.text
        accepted = await api.post(f"/applications/{applied.json()['id']}/accept",
                                  headers=casa, json={})
        assert accepted.status_code == 200, accepted.text
        await expect(page.locator("#feed li[data-type=ContractDraftedEvent]")).to_have_count(1)
        await expect(page.locator("#feed-state")).to_have_text("live")
        # The figures: sampled every 2 s, fetched by the page every 3 s.
        await expect(page.locator("[data-total=head]")).to_have_text("6", timeout=15_000)
        await shoot(page, screenshots, "laptop-live")

        await page.locator("#feed li[data-type=ApplicationAcceptedEvent] a.type").click()
        await expect(page.locator(".timeline")).to_contain_text("ApplicationAcceptedEvent")
        await expect(page.locator(".timeline")).to_contain_text("ContractDraftedEvent")
        await expect(page.locator(".timeline .saga-record").first).to_be_visible()
        flow = page.url.removeprefix(url)
        await shoot(page, screenshots, "laptop-flow")
        # The submission's flow: the handler that could not mail the organizer, the saga.
        await page.go_back()
        await page.locator("#feed li[data-type=MusicianApplicationSubmittedEvent] a.type").click()
        await expect(page.locator(".timeline .handlers").first).to_be_visible()
        await shoot(page, screenshots, "laptop-flow-submission")

        # Welcome emails could not be sent: dead letters. With the mail server up, the
        # group is retried and leaves the list.
        await page.goto(f"{url}/dashboard/dead-letters")
        group = page.locator("#groups tr.group", has_text="musicians.on-registered")
        for _ in range(100):
            if await group.count():
                break
            await page.reload()
        await expect(group).to_have_count(1)
        await shoot(page, screenshots, "laptop-dead-letters")
        await group.locator("a").first.click()
        await expect(page.locator("h1")).to_contain_text("musicians.on-registered")
        await shoot(page, screenshots, "laptop-dead-letter-group")
        await page.locator("table a.mono").first.click()
        await expect(page.locator("pre.body")).to_contain_text("MusicianId")
        await shoot(page, screenshots, "laptop-dead-letter")

        box = MailBox()
        from aiosmtpd.smtp import SMTP

        mail = await asyncio.get_running_loop().create_server(
            lambda: SMTP(box, hostname="localhost"), "127.0.0.1", served.smtp_port)
        try:
            await page.goto(f"{url}/dashboard/dead-letters")
            await group.get_by_role("button", name="Retry group…").click()
            await expect(page.locator(".confirm")).to_contain_text("Deliver again")
            await shoot(page, screenshots, "laptop-confirm")
            await page.get_by_role("button", name="Yes, go ahead").click()
            await expect(page.locator(".outcome")).to_contain_text("retried")
            await page.goto(f"{url}/dashboard/dead-letters")
            await expect(group).to_have_count(0)
            await expect(page.locator("table.audit")).to_contain_text("retry dead-letter group")
            assert "ana@musicos.example" in box.recipients
            await shoot(page, screenshots, "laptop-dead-letters-after-retry")
            remaining = await page.locator("#groups tr.group a").first.get_attribute("href")
            assert remaining is not None

            # The application's saga stopped where its email to the organizer failed: it is
            # resumed from the dashboard, and moves on.
            await page.goto(f"{url}/dashboard/sagas?kind=musician-application")
            await page.locator("table a.mono").first.click()
            await expect(page.locator(".status").first).to_have_text("Running")
            await page.get_by_role("button", name="Resume…").click()
            await page.get_by_role("button", name="Yes, go ahead").click()
            await expect(page.locator("h1")).to_have_text("Saga resumed")
            await shoot(page, screenshots, "laptop-saga-resumed")
            await page.get_by_role("link", name="Back").click()
            await expect(page.locator(".status").first).to_have_text("Completed")
            await expect(page.locator("ol.steps .mark-completed")).to_have_count(5)
        finally:
            mail.close()
            await mail.wait_closed()

        pages = {"login": "/dashboard/login", "live": "/dashboard", "flow": flow,
                 "sagas": "/dashboard/sagas",
                 "dead-letters": "/dashboard/dead-letters", "dead-letter-group": remaining,
                 "projections": "/dashboard/projections", "audit": "/dashboard/audit"}
        await page.goto(f"{url}/dashboard/sagas")
        await page.locator("table a.mono").first.click()
        await expect(page.locator("ol.steps")).to_be_visible()
        pages["saga"] = page.url.removeprefix(url)
        for name in ("sagas", "saga", "projections", "audit"):
            await page.goto(url + pages[name])
            await shoot(page, screenshots, f"laptop-{name}")
        await on_phone(browser, laptop, url, screenshots, pages)

        # A musician's key, or a musician logging in, gets 403.
        musician = await browser.new_context(viewport=LAPTOP, extra_http_headers=ana)
        refused = await (await musician.new_page()).goto(f"{url}/dashboard")
        assert refused is not None and refused.status == 403
        await musician.close()
        stranger = await (await browser.new_context(viewport=LAPTOP)).new_page()
        await stranger.goto(f"{url}/dashboard/login")
        await stranger.get_by_label("User name").fill("ana")
        await stranger.get_by_label("Password").fill(MUSICIAN_PASSWORD)
        await stranger.get_by_role("button", name="Log in").click()
        await expect(stranger.locator(".error")).to_contain_text("may not see the dashboard")
        await shoot(stranger, screenshots, "laptop-musician-refused")
        assert (await stranger.goto(f"{url}/dashboard")) is not None
        await expect(stranger.locator("h1")).to_have_text("Operator log-in")
        await browser.close()
