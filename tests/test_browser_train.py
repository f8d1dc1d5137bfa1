"""The Train tab in a real browser (Debian's chromium via playwright): draw a shape and see its points, train a
tiny DDPM for a few seconds and watch the loss curve appear, download it, find it in the DDPM tab's list, and check
that a second browser session does not see it.

Screenshots go to artifacts/train-*.png (git-ignored): look at them. Skipped when /usr/bin/chromium or
checkpoints/ddpm-moons is missing.
"""

from __future__ import annotations

import math
import time

import pytest
from test_app_api import need_checkpoint, serve_app
from test_browser import ARTIFACTS, _wait_for, chromium, open_page

pytestmark = pytest.mark.browser
SECONDS = 4  # the training budget typed into the page


def _open_train_tab(page, url: str) -> None:
    page.goto(url, wait_until="load")
    page.get_by_role("tab", name="Train").click()
    page.wait_for_selector("#train-btn", timeout=30_000)


def _model_options(page) -> list[str]:
    """The names in the DDPM tab's model list (opened, read, closed)."""
    page.get_by_role("tab", name="Diffusion (DDPM)").click()
    box = page.get_by_role("combobox", name="Model").first
    box.click()
    page.wait_for_selector("ul.option-list li", timeout=10_000)
    names = [li.inner_text().replace("✓", "").strip() for li in page.locator("ul.option-list li").all()]
    box.press("Escape")
    return names


def _draw_ring(page) -> None:
    """One stroke round a ring, without choosing a tool first: the brush must already be chosen."""
    brush = page.locator("#train-sketch button[aria-label=Brush]")
    _wait_for(lambda: "highlight" in (brush.get_attribute("class") or ""), 15, "the sketchpad's brush to be chosen")
    canvas = page.locator("#train-sketch canvas").first
    canvas.wait_for(timeout=10_000)
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    cx, cy, r = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, 0.3 * min(box["width"], box["height"])
    page.mouse.move(cx + r, cy)
    page.mouse.down()
    for i in range(1, 61):
        a = 2 * math.pi * i / 60
        page.mouse.move(cx + r * math.cos(a), cy + r * math.sin(a), steps=2)
    page.mouse.up()


def test_draw_train_download_and_find_it_in_this_session_only():
    need_checkpoint()
    ARTIFACTS.mkdir(exist_ok=True)
    with serve_app() as url, chromium() as browser:
        page, errors = open_page(browser)
        _open_train_tab(page, url)
        page.wait_for_timeout(500)
        page.screenshot(path=ARTIFACTS / "train-1-tab.png", full_page=True)

        preview = page.locator("#train-preview img")
        before = preview.get_attribute("src")
        _draw_ring(page)
        _wait_for(lambda: preview.get_attribute("src") != before, 20, "the drawing's points")
        dataset = page.locator("#train-dataset input")
        _wait_for(lambda: dataset.input_value() == "my drawing", 10, "the dataset to switch to the drawing")
        page.locator("#train-preview").scroll_into_view_if_needed()
        page.wait_for_timeout(300)
        page.screenshot(path=ARTIFACTS / "train-2-drawing.png")

        dataset.click()  # back to a built-in set: the DDPM tab's list is checked below
        page.locator("ul.option-list li", has_text="moons").first.click()
        _wait_for(lambda: dataset.input_value() == "moons", 10, "moons to be chosen")
        seconds = page.locator("#train-seconds input")
        seconds.fill(str(SECONDS))
        seconds.press("Tab")
        loss = page.locator("#train-loss img")
        placeholder = loss.get_attribute("src")
        clicked = time.monotonic()
        page.click("#train-btn")
        status = page.locator("#train-status")
        _wait_for(lambda: "Training" in status.inner_text(), 30, "the status to say Training")
        _wait_for(lambda: loss.get_attribute("src") != placeholder, 30, "the loss curve")
        _wait_for(lambda: "step" in status.inner_text(), 10, "the step count")
        page.get_by_role("tab", name="Train").scroll_into_view_if_needed()
        page.screenshot(path=ARTIFACTS / "train-3-training.png")
        _wait_for(lambda: "is ready" in status.inner_text(), 60, "the end of training")
        trained_s = time.monotonic() - clicked
        page.wait_for_timeout(500)
        page.get_by_role("tab", name="Train").scroll_into_view_if_needed()
        page.screenshot(path=ARTIFACTS / "train-4-done.png")
        assert "my-ddpm-moons-1" in status.inner_text()

        page.click("#train-download-btn")
        download = page.locator("#train-download")
        _wait_for(lambda: download.count() and "my-ddpm-moons-1\n.zip" in download.first.inner_text(), 30,
                  "the checkpoint zip")  # the name and its extension are shown apart
        page.screenshot(path=ARTIFACTS / "train-5-downloaded.png", full_page=True)

        assert "my-ddpm-moons-1" in _model_options(page)  # this session sees its model in the DDPM tab
        page.screenshot(path=ARTIFACTS / "train-6-ddpm-tab.png")

        other = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
        other.goto(url, wait_until="load")
        other.wait_for_selector("#animate-btn", timeout=30_000)
        names = _model_options(other)
        assert "ddpm-moons" in names and "my-ddpm-moons-1" not in names  # another session does not
        assert not errors, errors
        print(f"trained through the page in {trained_s:.1f} s (budget {SECONDS} s)")
