"""The web chat of `dodai serve` in a real browser: Playwright driving Debian's chromium (no browser download).

Load the page, send a message in English and one in Japanese, watch the streamed reply grow, press stop in the
middle of a long reply (the server frees the sequence), start a new chat.
"""

from __future__ import annotations

import re
import shutil
import time

import pytest

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (test extra) drives the browser")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if not shutil.which("chromium"):
    pytest.skip("Debian's chromium is not installed (apt-get install chromium; .ci/run installs it)",
                allow_module_level=True)

from test_serve import MODEL, metric, tiny  # noqa: E402,F401 - the tiny model fixture

from dodai.serve.server import BackgroundServer, make_served  # noqa: E402


@pytest.fixture(scope="module")
def server(tiny):  # noqa: F811
    model, tok = tiny
    served = make_served(model, tok, MODEL, max_batch=4, context=256, max_tokens_cap=200, num_blocks=64,
                         embed_model=None)
    with BackgroundServer(served) as srv:
        yield srv


@pytest.fixture(scope="module")
def page(server):
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        pg = browser.new_context(bypass_csp=True).new_page()  # the page forbids eval; the test probes use it
        errors = []
        pg.on("pageerror", lambda e: errors.append(str(e)))
        pg.goto(server.url + "/")
        pg.errors = errors
        yield pg
        browser.close()


def send(page, text):
    page.fill("#input", text)
    page.press("#input", "Enter")


def wait_idle(page, timeout=60):
    page.wait_for_function("document.querySelector('#send').disabled === false", timeout=timeout * 1000)


def test_chat_in_english_and_japanese_then_stop_and_new_chat(page, server):
    import httpx

    assert page.title() == "dodai chat" and MODEL in page.inner_text("#model")
    send(page, "hello there")
    page.wait_for_selector(".msg.user")
    wait_idle(page)
    replies = page.query_selector_all(".msg.assistant")
    assert len(replies) == 1 and replies[0].inner_text().strip()
    assert re.search(r"tok/s", page.inner_text("#stats"))

    send(page, "こんにちは、元気ですか？")
    wait_idle(page)
    users = [u.inner_text() for u in page.query_selector_all(".msg.user")]
    assert users == ["hello there", "こんにちは、元気ですか？"]  # Japanese is kept and shown as text
    assert len(page.query_selector_all(".msg.assistant")) == 2

    # a long reply: stop it while it streams
    page.fill("#temp", "1.5")
    send(page, "tell me everything " * 5)
    page.wait_for_function("document.querySelector('.msg.assistant:last-child') && "
                           "document.querySelector('.msg.assistant:last-child').textContent.length > 0", timeout=60000)
    grown = page.inner_text(".msg.assistant:last-child")
    assert not page.is_disabled("#stop")
    page.click("#stop")
    wait_idle(page)
    assert page.inner_text("#stats") == "stopped"
    t0 = time.monotonic()
    while time.monotonic() - t0 < 2:  # the server dropped the sequence and its blocks
        m = httpx.get(server.url + "/metrics").text
        if metric(m, "dodai_kv_blocks_free") == metric(m, "dodai_kv_blocks_total"):
            break
        time.sleep(0.05)
    assert metric(m, "dodai_kv_blocks_free") == metric(m, "dodai_kv_blocks_total")
    assert len(page.inner_text(".msg.assistant:last-child")) >= len(grown)

    page.click("#new")
    assert page.query_selector_all(".msg") == []
    send(page, "again")
    wait_idle(page)
    assert len(page.query_selector_all(".msg.user")) == 1  # a fresh conversation
    assert page.errors == []
