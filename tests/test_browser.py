"""The app in a real browser: Debian's chromium driven by playwright. Click Animate, see frames arrive, scrub.

Screenshots go to artifacts/ at the repo root (git-ignored): look at them. Skipped when /usr/bin/chromium or
checkpoints/ddpm-moons is missing.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from test_app_api import ROOT, need_checkpoint, serve_app

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "artifacts"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-quic"]

pytestmark = pytest.mark.browser


@contextmanager
def chromium():
    """Debian's headless Chromium driven by playwright (which cannot download browsers here); closed on exit.
    Skips the test when /usr/bin/chromium is missing (`make test` installs it as root)."""
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium is missing (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


def open_page(browser, viewport: dict | None = None):
    """A fresh page and the list its JavaScript errors are collected into."""
    page = browser.new_page(viewport=viewport or {"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    return page, errors


def _wait_for(predicate, timeout: float, what: str, poll: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_animate_then_scrub_in_chromium():
    need_checkpoint()
    ARTIFACTS.mkdir(exist_ok=True)
    with serve_app() as url, chromium() as browser:
        page, errors = open_page(browser)
        page.goto(url, wait_until="load")
        page.wait_for_selector("#animate-btn", timeout=30_000)
        frame = page.locator("#chain-frame img")
        frame.wait_for(timeout=30_000)
        page.wait_for_timeout(500)
        page.screenshot(path=ARTIFACTS / "browser-1-loaded.png", full_page=True)
        before = frame.get_attribute("src")

        clicked = time.monotonic()
        page.click("#animate-btn")
        seen = [before]

        def frames_seen(count: int):
            def check() -> bool:
                src = frame.get_attribute("src")
                if src and src != seen[-1]:
                    seen.append(src)
                return len(seen) > count
            return check

        _wait_for(frames_seen(1), 30, "the first streamed frame", poll=0.01)
        first_frame_s = time.monotonic() - clicked
        _wait_for(frames_seen(3), 30, "three streamed frames")
        page.screenshot(path=ARTIFACTS / "browser-2-streaming.png")
        summary = page.locator("#chain-summary")
        _wait_for(lambda: "steps" in (summary.inner_text() or ""), 60, "the end of the chain")
        page.wait_for_timeout(300)
        page.screenshot(path=ARTIFACTS / "browser-3-done.png")
        done_src = frame.get_attribute("src")

        scrub = page.locator("#scrub-slider input[type=range]")
        scrub.fill("400")
        _wait_for(lambda: frame.get_attribute("src") != done_src, 15, "the scrubbed frame")
        scrub.dispatch_event("pointerup")  # releasing the slider moves the inside-step panel to that k
        inside_k = page.locator("#inside-k input[type=number]")
        _wait_for(lambda: inside_k.input_value() == "400", 15, "the inside-step k to follow")
        readout = page.locator("#inside-readout")
        _wait_for(lambda: "400" in readout.inner_text(), 30, "the inside-step readout at k = 400")
        page.wait_for_timeout(500)
        page.screenshot(path=ARTIFACTS / "browser-4-scrubbed.png", full_page=True)
        assert not errors, errors
        print(f"first frame {first_frame_s:.2f} s after the click")


TAB_PANELS = {"Diffusion": "#chain-frame", "Flows": "#flow-zx", "Train": "#train-snapshot"}


def open_tab(page, name: str) -> None:
    """Click the tab called `name`, directly or, where the bar is too narrow for it, through Gradio's tab menu."""
    import re

    tab = page.get_by_role("tab", name=re.compile(name))
    if tab.count() and tab.first.is_visible():
        tab.first.click()
    else:
        page.get_by_label("More tabs").click()
        page.locator(".overflow-dropdown button", has_text=name).click()


@pytest.mark.parametrize("width", [400, 1280])
def test_every_tab_fits_the_screen_and_can_be_reached(width):
    """At a phone's 400 px and a laptop's 1280 px: the page is no wider than the screen, every tab can be opened,
    and its main picture is at least 85% of the content width on a phone (panels stack). Screenshots: artifacts/."""
    need_checkpoint()
    ARTIFACTS.mkdir(exist_ok=True)
    with serve_app() as url, chromium() as browser:
        page, errors = open_page(browser, {"width": width, "height": 900})
        page.goto(url, wait_until="load")
        page.wait_for_selector("#animate-btn", timeout=30_000)
        for name, panel in TAB_PANELS.items():
            open_tab(page, name)
            picture = page.locator(panel)
            picture.wait_for(state="visible", timeout=30_000)
            page.wait_for_timeout(500)
            assert page.evaluate("document.documentElement.scrollWidth") <= width, f"{name} is wider than {width}"
            if width < 640:
                box = picture.bounding_box()
                assert box["width"] >= 0.85 * (width - 24), f"{name}'s picture is {box['width']:.0f} px wide"
            page.screenshot(path=ARTIFACTS / f"layout-{width}-{name.lower()}.png")
        assert not errors, errors
