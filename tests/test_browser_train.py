"""The Train tab in a real browser (Debian's chromium via playwright): draw a shape and see its points, train a
tiny DDPM for a few seconds and watch the loss curve appear, download it, find it in the DDPM tab's list, and check
that a second browser session does not see it. Also, through the API of the same server: Gradio's queue runs at most
two trainings at once and shows the third its place in line; Stop keeps the model; one run per session.

Screenshots go to artifacts/train-*.png (git-ignored): look at them. Skipped when /usr/bin/chromium or
checkpoints/ddpm-moons is missing.
"""

from __future__ import annotations

import math
import time

import pytest
from gradio_client import Client
from gradio_client.utils import Status
from test_app_api import need_checkpoint, serve_app
from test_browser import ARTIFACTS, _wait_for, chromium, open_accordion, open_page

# Both tests train on a shared 2-core machine: `make test` (`--dist loadgroup`) runs them one after the other on one
# worker, so neither reads the other's three trainings as its own server being slow.
pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("trainings")]
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
        open_accordion(page, "train-settings")
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


LONG = ("ddpm", "moons", 50_000, 120, 3e-3, 64, 16, 1, 2, 20, "linear", 0)  # the knobs, in the page's order


def _until(job, codes, log, timeout: float = 90) -> None:
    """Wait for `job`'s status to be one of `codes`; on a timeout, say where every job stood and what the app
    printed last (a status that never comes is otherwise a bare timeout)."""
    try:
        _wait_for(lambda: job.status().code in codes, timeout, f"status in {codes}, is {job.status().code}")
    except AssertionError as error:
        raise AssertionError(f"{error}\n--- the app's last output ---\n{log.read_text()[-4000:]}") from None


def test_the_queue_runs_two_trainings_and_shows_the_third_its_place(tmp_path):
    need_checkpoint()
    log = tmp_path / "app.log"
    with serve_app(log_path=log) as url:
        # three visitors, each from its own address (as a proxy on a private address forwards them)
        a, b, c = (Client(url, verbose=False, download_files=False, headers={"X-Forwarded-For": f"203.0.113.{i}"})
                   for i in (1, 2, 3))
        first, second = a.submit(*LONG, api_name="/train"), b.submit(*LONG, api_name="/train")
        _until(first, (Status.ITERATING,), log)
        _until(second, (Status.ITERATING,), log)
        third = c.submit(*LONG, api_name="/train")
        _until(third, (Status.IN_QUEUE,), log)
        time.sleep(2)
        assert third.status().code == Status.IN_QUEUE and third.status().rank == 0  # first in line, waiting

        stopped = a.predict(api_name="/train_stop")[0]  # Stop answers with the kept model
        assert "my-ddpm-moons-1: stopped; the model is kept" in stopped
        _wait_for(first.done, 30, "the stopped run's event to end")
        assert "stopped; the model is kept" in first.outputs()[-1][0]
        _until(third, (Status.ITERATING,), log)  # its slot came free: the third trains now

        assert "stopped; the model is kept" in c.predict(api_name="/train_stop")[0]  # a free slot again
        started = time.monotonic()
        # b trains already: a second run is refused, by the queue's per-visitor gate (HTTP 429, genapp.ui.limits) if
        # the app has one, else by the tab as the event starts
        again = b.submit(*LONG, api_name="/train")
        with pytest.raises(Exception, match="already have a model training|429 Too Many Requests"):
            again.result(timeout=60)
        assert time.monotonic() - started < 30
        assert "stopped; the model is kept" in b.predict(api_name="/train_stop")[0]
        assert "Nothing trains" in a.predict(api_name="/train_stop")[0]
