"""The console in a real browser (Debian's chromium, driven by selenium through the system's
chromedriver) against the daemon on a real Asterisk: sign in with a token, see a real call waiting
appear on the board within 2 s of it entering the queue, pause a responder from the page and see
Asterisk change; a request without the session cookie, and a cross-site one from another origin
that carries the cookie, are refused.

Every browser call blocks, so each runs in a thread: the daemon shares this test's event loop.
Set HOTLINE_CONSOLE_PNG to a path to keep the board's screenshot there (docs/console.png)."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.harness import AmiTestClient, ManualClock, free_port, local, wait_for
from tests.integration.test_api import ApiDaemon, api_daemon  # noqa: F401 - the fixture

NY = ZoneInfo("America/New_York")
NOON = datetime(2026, 12, 2, 12, 0, tzinfo=NY)
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    """Headless Chromium, with the system's chromedriver (never a download)."""
    for program in (CHROMIUM, CHROMEDRIVER):
        if not program.exists():
            pytest.fail(f"{program} is missing: deploy/setup-host.sh installs it", pytrace=False)
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",  # as root, Chromium does not start without it
        "--disable-dev-shm-usage",
        "--window-size=1600,1000",
        "--force-device-scale-factor=1",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


async def _text(driver: WebDriver, selector: str) -> str:
    """The text of the first element `selector` finds, or "": read in one script, since the
    board is redrawn every second under any element a test would hold on to."""
    script = "const e = document.querySelector(arguments[0]); return e ? e.textContent : '';"
    text = await asyncio.to_thread(driver.execute_script, script, selector)
    return str(text)


async def _waiting_on_board(driver: WebDriver) -> int:
    text = await _text(driver, '[data-queue="crisis"] [data-field="waiting"]')
    return int(text) if text.isdigit() else -1


async def _refused(base: str) -> float:
    async with aiohttp.ClientSession() as http, http.get(f"{base}/metrics") as response:
        text = await response.text()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "hotline_api_auth_refused_total"
        and sample.labels["reason"] == "cross_site"
    )


async def test_the_console_shows_a_waiting_call_within_2_s_and_pauses_from_the_page(
    ami: AmiTestClient,
    api_daemon: ApiDaemon,  # noqa: F811 - the fixture imported above
    browser: WebDriver,
    tmp_path: Path,
) -> None:
    hotline = await api_daemon(ManualClock(NOON), roster=_ROSTER)
    await wait_for(ami.names, lambda n: n.get("crisis") == ["r-ana", "r-ben"], 10, "on duty")
    driver = browser

    def sign_in() -> None:
        driver.get(f"{hotline.base}/console")
        # By keyboard: the page puts the focus in the token field; Enter signs in.
        field = driver.switch_to.active_element
        assert field.get_attribute("id") == "token"
        field.send_keys(hotline.tokens.supervisor, Keys.ENTER)
        WebDriverWait(driver, 10).until(
            expected_conditions.presence_of_element_located(
                (By.CSS_SELECTOR, '[data-queue="crisis"]')
            )
        )

    await asyncio.to_thread(sign_in)
    assert await _waiting_on_board(driver) == 0
    # The session cookie is HttpOnly: the page's own script cannot read it.
    cookies = await asyncio.to_thread(driver.get_cookies)
    session = next(c for c in cookies if c["name"] == "hotline_session")
    assert session["httpOnly"] is True
    assert session["sameSite"] == "Strict"
    assert await asyncio.to_thread(driver.execute_script, "return document.cookie") == ""

    # A real call into the crisis line; nobody answers, so it waits.
    ami.events.clear()
    await ami.call("988", caller="+15550107777", hold_s=20)

    async def joined() -> float | None:
        for event in ami.events:
            if event.name == "QueueCallerJoin" and event.fields.get("Queue") == "crisis":
                return time.monotonic()
        return None

    entered = await wait_for(joined, lambda t: t is not None, 10, "the call in the queue")
    assert entered is not None
    await wait_for(lambda: _waiting_on_board(driver), lambda n: n == 1, 2.5, "on the board")
    seen_after = time.monotonic() - entered
    assert seen_after <= 2.0, f"the board showed the call {seen_after:.2f} s after it entered"

    # Pause r-ana in crisis for a break, from the page, by its form and its confirmation.
    def pause() -> None:
        Select(driver.find_element(By.ID, "pause-responder")).select_by_value("r-ana")
        Select(driver.find_element(By.ID, "pause-queue")).select_by_value("crisis")
        Select(driver.find_element(By.ID, "pause-reason")).select_by_value("break")
        driver.find_element(By.ID, "pause-button").send_keys(Keys.ENTER)
        WebDriverWait(driver, 5).until(
            expected_conditions.visibility_of_element_located((By.ID, "confirm-yes"))
        )
        assert "Pause r-ana in crisis for break?" in driver.find_element(By.ID, "confirm-text").text
        # The dialog starts on Cancel (the safe choice); Shift+Tab reaches Confirm, Enter does it.
        assert driver.switch_to.active_element.get_attribute("id") == "confirm-no"
        ActionChains(driver).key_down(Keys.SHIFT).send_keys(Keys.TAB).key_up(Keys.SHIFT).perform()
        assert driver.switch_to.active_element.get_attribute("id") == "confirm-yes"
        driver.switch_to.active_element.send_keys(Keys.ENTER)

    await asyncio.to_thread(pause)

    async def ana_paused() -> str | None:
        for member in await ami.members("crisis"):
            if member.name == "r-ana":
                return member.paused_reason if member.paused else None
        return None

    assert await wait_for(ana_paused, lambda r: r == "break", 5, "r-ana paused in Asterisk")
    result = await asyncio.to_thread(lambda: driver.find_element(By.ID, "result").text)
    assert result == "r-ana paused"

    # The board shows the pause with its reason; the screenshot keeps the board as it is.
    await wait_for(
        lambda: _text(driver, '[data-responder="r-ana"] [data-field="state"]'),
        lambda t: t == "paused: break",
        3,
        "the pause on the board",
    )
    shot = tmp_path / "console.png"
    await asyncio.to_thread(driver.execute_script, "window.scrollTo(0, 0)")
    await asyncio.to_thread(driver.save_screenshot, str(shot))
    assert shot.read_bytes().startswith(b"\x89PNG")
    if keep := os.environ.get("HOTLINE_CONSOLE_PNG"):
        shutil.copyfile(shot, keep)

    # Without the session cookie, nothing.
    async with aiohttp.ClientSession() as http:
        url = f"{hotline.base}/api/v1/responders/r-ben/pause"
        async with http.post(url, json={"reason": "break"}) as response:
            assert response.status == 401

    # A page of another origin (another port: the same site, so the browser sends the cookie)
    # posts to the API: refused for its origin, and Asterisk does not change.
    before = await _refused(hotline.base)
    target = f"{hotline.base}/api/v1/responders/r-ben/pause"
    page = (
        "<!doctype html><form method=post enctype=text/plain action='" + target + "'>"
        '<input name=\'{"reason":"break","x":"\' value=\'"}\'></form>'
        "<script>document.forms[0].submit()</script>"
    )
    evil = web.Application()

    async def serve_page(_request: web.Request) -> web.Response:
        return web.Response(text=page, content_type="text/html")

    evil.router.add_get("/", serve_page)
    runner = web.AppRunner(evil)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        await asyncio.to_thread(driver.get, f"http://127.0.0.1:{port}/")
        await wait_for(lambda: _refused(hotline.base), lambda n: n > before, 5, "refused")
    finally:
        await runner.cleanup()
    members = await ami.members("crisis")
    assert [m.paused for m in members if m.name == "r-ben"] == [False]


# The stand-in responders of this roster never answer (8xxx): a call waits in the queue.
_ROSTER = f"""
timezone: America/New_York
queues:
  crisis: {{min_responders: 2}}
responders:
  r-ana: {{name: Ana Ruiz, interface: "{local(8001)}", queues: {{crisis: 0}}}}
  r-ben: {{name: Ben Ode, interface: "{local(8002)}", queues: {{crisis: 0}}}}
  r-cai: {{name: Cai Lin, interface: "{local(8003)}", queues: {{crisis: 0}}}}
shifts:
  - {{name: day, days: [daily], start: "08:00", end: "20:00", responders: [r-ana, r-ben]}}
  - {{name: evening, days: [daily], start: "20:00", end: "23:00", responders: [r-cai]}}
"""
