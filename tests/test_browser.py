"""The app in a real browser: Debian's chromium driven by playwright. Click Animate, see frames arrive, scrub in the
page (frame time measured there, no request per step).

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


def open_accordion(page, elem_id: str) -> None:
    """Unfold the accordion `elem_id` (the details below each tab's first screen are folded)."""
    head = page.locator(f"#{elem_id} > button.label-wrap").first
    head.scroll_into_view_if_needed()
    if "open" not in (head.get_attribute("class") or ""):
        head.click()


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
        host = page.locator("#chain-frame")

        def scrub_to(k: int) -> None:
            scrub.fill(str(k))

        def drawn_at(k: int):
            def check() -> bool:
                scrub_to(k)  # the kept chain reaches the page just after the run: ask again until it is drawn
                return host.get_attribute("data-scrub-k") == str(k)
            return check

        _wait_for(drawn_at(400), 15, "the page's own frame at k = 400", poll=0.2)
        requests: list[str] = []
        # a component's code loaded late (the folded step's plot) is not a request for a frame: only the server's API
        page.on("request", lambda r: requests.append(r.url) if "/assets/" not in r.url and not r.url.startswith(
            "data:") else None)
        page.evaluate("window.genappScrub.times = []")
        ks = list(range(1000, -1, -20))
        for k in ks:  # a drag from x_N down to x_0: every step redrawn in the browser
            scrub_to(k)
        page.wait_for_timeout(300)
        plain = page.evaluate("window.genappScrub.times.slice()")
        page.screenshot(path=ARTIFACTS / "browser-4-scrubbed-in-page.png")
        for label in ("path trails", "density of x_k"):
            page.locator("#scrub-show label", has_text=label).click()
        page.evaluate("window.genappScrub.times = []")
        for k in ks:
            scrub_to(k)
        page.wait_for_timeout(300)
        extras = page.evaluate("window.genappScrub.times.slice()")
        scrub_to(600)
        page.screenshot(path=ARTIFACTS / "browser-5-trails-density.png")
        assert host.get_attribute("data-scrub-k") == "600"
        assert page.locator("#chain-frame canvas.genapp-scrub").is_visible()
        assert not requests, f"the drag asked the server: {requests[:5]}"
        assert frame.get_attribute("src") == done_src  # the server's picture is untouched, the canvas covers it
        assert len(plain) >= len(ks) and len(extras) >= len(ks)
        slow_plain, slow_extras = sorted(plain)[int(0.9 * len(plain))], sorted(extras)[int(0.9 * len(extras))]
        print(f"in-page frame time: median {sorted(plain)[len(plain) // 2]:.1f} ms, 90% {slow_plain:.1f} ms, "
              f"with trails and density 90% {slow_extras:.1f} ms")
        assert slow_plain <= 50 and slow_extras <= 50

        open_accordion(page, "ddpm-inside")
        scrub_to(400)
        scrub.dispatch_event("pointerup")  # releasing the slider moves the inside-step panel to that k
        inside_k = page.locator("#inside-k input[type=number]")
        _wait_for(lambda: inside_k.input_value() == "400", 15, "the inside-step k to follow")
        readout = page.locator("#inside-readout")
        first_cell = readout.locator("td").first
        _wait_for(lambda: first_cell.count() and first_cell.inner_text().strip() == "400", 30,
                  "the inside-step readout's table at k = 400")
        _wait_for(lambda: page.evaluate("getComputedStyle(document.querySelector('#inside-readout')).opacity")
                  == "1", 10, "the readout to be current again")
        page.wait_for_timeout(500)
        page.screenshot(path=ARTIFACTS / "browser-6-inside.png", full_page=True)
        assert not errors, errors
        print(f"first frame {first_frame_s:.2f} s after the click")


def test_a_new_model_clears_the_previous_models_panels_in_chromium():
    """Issue 15: after another model was picked, panels still showed the previous model's chain and step."""
    need_checkpoint()
    if not (ROOT / "checkpoints" / "ddpm-8gaussians" / "model.safetensors").is_file():
        pytest.skip("checkpoints/ddpm-8gaussians is missing")
    ARTIFACTS.mkdir(exist_ok=True)
    with serve_app() as url, chromium() as browser:
        page, errors = open_page(browser)
        page.goto(url, wait_until="load")
        page.wait_for_selector("#sample-btn", timeout=30_000)
        open_accordion(page, "ddpm-inside")
        page.click("#sample-btn")
        summary, readout = page.locator("#chain-summary"), page.locator("#inside-readout")
        _wait_for(lambda: "steps" in (summary.inner_text() or ""), 60, "the sampled chain")
        _wait_for(lambda: readout.locator("td").count() > 0, 30, "the inside-step readout")
        scrub = page.locator("#scrub-slider input[type=range]")

        def drawn() -> bool:
            scrub.fill("300")
            return page.locator("#chain-frame canvas.genapp-scrub").is_visible()

        _wait_for(drawn, 15, "the page's own frame", poll=0.2)
        page.locator("#ddpm-model input").click()
        page.get_by_role("option", name="ddpm-8gaussians").click()
        _wait_for(lambda: "Run the chain first" in readout.inner_text(), 15, "the inside-step panel to clear")
        _wait_for(lambda: "steps" not in (summary.inner_text() or ""), 15, "the chain summary to clear")
        assert not page.locator("#chain-frame canvas.genapp-scrub").is_visible()  # the old chain is gone
        scrub.fill("200")
        page.wait_for_timeout(300)
        assert not page.locator("#chain-frame canvas.genapp-scrub").is_visible()  # nothing left to scrub
        page.screenshot(path=ARTIFACTS / "browser-7-new-model.png")
        assert not errors, errors


TAB_PANELS = {"Diffusion": "#chain-frame", "Flows": "#flow-zx", "Train": "#train-snapshot"}
TAB_BUTTONS = {"Diffusion": "#animate-btn", "Flows": "#flow-resample", "Train": "#train-btn"}  # the one primary


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
    its first screen (900 px high) shows its one primary button whole and the top of its main picture (the details
    are folded below), and the picture is at least 85% of the content width on a phone (panels stack).
    Screenshots: artifacts/."""
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
            assert page.locator(".gradio-container button.primary:visible").count() == 1, f"{name}: one primary"
            button, top = page.locator(TAB_BUTTONS[name]).bounding_box(), picture.bounding_box()["y"]
            assert button["y"] + button["height"] <= 900, f"{name}'s button is below the first screen"
            assert top <= 900 - 120, f"{name}'s picture starts at {top:.0f} px, below the first screen"
            if width < 640:
                box = picture.bounding_box()
                assert box["width"] >= 0.85 * (width - 24), f"{name}'s picture is {box['width']:.0f} px wide"
            page.screenshot(path=ARTIFACTS / f"layout-{width}-{name.lower()}.png")
        assert not errors, errors
