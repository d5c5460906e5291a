"""The console's defences in a real browser (headless Chromium, Selenium) against the console on a real
uvicorn on loopback, with a password: signing in through the form (a wrong password first), uploading
through the new-job form (its CSRF token is the form's first field, checked before the files are read),
signing out (a copy of the cookie then opens nothing), and a page of another origin making the
signed-in browser POST a large upload to the console (refused from its headers: the server reads only a
few kilobytes of it, and no job is made).

Skipped without Chromium and chromedriver, except in CI (``CI=true``), where it fails.
"""

from __future__ import annotations

import http.server
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from tests.conftest import make_settings
from tests.pipeline.console.conftest import Harness
from tests.pipeline.console.test_security import CountingH11
from tests.test_console_browser import _wait_for, browser_binaries, driver  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.integration, pytest.mark.slow]
PASSWORD = "a long enough password"


@pytest.fixture
def console(tmp_path: Path) -> Iterator[tuple[str, Harness]]:
    settings = make_settings(tmp_path, console_password=PASSWORD)
    harness = Harness(settings)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    config = uvicorn.Config(
        harness.app, http=CountingH11, lifespan="off", log_level="warning", access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    _wait_for(lambda: server.started, 20, "uvicorn did not start")
    yield f"http://127.0.0.1:{sock.getsockname()[1]}", harness
    server.should_exit = True
    thread.join(10)
    sock.close()


@pytest.fixture
def evil_site(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """Another origin (another port of 127.0.0.1: same site, other origin) serving files from a folder."""
    folder = tmp_path / "evil"
    folder.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(folder), **kwargs)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", folder
    server.shutdown()


def test_sign_in_upload_sign_out_and_a_cross_site_post_in_a_real_browser(
    console: tuple[str, Harness],
    evil_site: tuple[str, Path],
    driver: Any,  # noqa: F811 (the fixture imported above)
    assets: Path,
) -> None:
    from selenium.webdriver.common.by import By

    url, harness = console
    settings = harness.settings
    driver.delete_all_cookies()
    driver.get(url + "/")
    _wait_for(lambda: "/login" in driver.current_url, 10, "the console did not ask to sign in")
    driver.find_element(By.ID, "password").send_keys("not it")
    driver.find_element(By.CSS_SELECTOR, "#login button").click()
    _wait_for(lambda: "not right" in driver.page_source, 10, "a wrong password was not refused")
    driver.find_element(By.ID, "password").send_keys(PASSWORD)
    driver.find_element(By.CSS_SELECTOR, "#login button").click()
    _wait_for(lambda: driver.current_url.rstrip("/") == url, 10, "signing in did not lead home")

    driver.get(url + "/new")
    driver.find_element(By.ID, "voice").send_keys(str(assets / "jfk.flac"))
    driver.find_element(By.ID, "faces").send_keys(str(assets / "astronaut.png"))
    driver.find_element(By.ID, "submit").click()
    _wait_for(lambda: "/jobs/j" in driver.current_url, 30, "the upload did not lead to the job's page")
    specs = [i.key for i in harness.store.list(settings.bucket_inputs, "jobs/") if i.key.endswith(".json")]
    assert len(specs) == 1

    # another origin's page makes this signed-in browser POST 6 MB to the console (the session cookie
    # goes with it: SameSite=Lax lets a same-site request carry it)
    evil_url, folder = evil_site
    (folder / "index.html").write_text(
        "<!doctype html><title>cats</title><script>"
        "const form = new FormData();"
        "form.append('voice', new Blob([new Uint8Array(6000000)]), 'big.flac');"
        f"fetch('{url}/jobs', {{method: 'POST', mode: 'no-cors', credentials: 'include', body: form}})"
        ".then(() => document.title = 'sent', () => document.title = 'failed');"
        "</script>"
    )
    CountingH11.received = 0
    driver.get(evil_url + "/index.html")
    _wait_for(lambda: driver.title in ("sent", "failed"), 30, "the other site's page did not post")
    time.sleep(0.5)
    read = CountingH11.received
    assert read < 512 * 1024, read  # refused from the headers; at most uvicorn's buffer of the 6 MB
    print(f"the cross-site 6 MB POST: the server read {read} bytes")
    after = [i.key for i in harness.store.list(settings.bucket_inputs, "jobs/") if i.key.endswith(".json")]
    assert after == specs

    copied = driver.get_cookie("mp_session")["value"]
    driver.get(url + "/")
    driver.find_element(By.CSS_SELECTOR, "form[action='/logout'] button").click()
    _wait_for(lambda: "/login" in driver.current_url, 10, "signing out did not lead to the sign-in page")
    time.sleep(2.1)  # a replica re-reads a session's record after 2 s; this one knows at once
    stolen = httpx.get(url + "/api/jobs", cookies={"mp_session": copied})
    assert stolen.status_code == 401
