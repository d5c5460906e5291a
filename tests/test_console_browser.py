"""The console in a real browser (headless Chromium from Debian, driven by Selenium) against a running
`mouthpiece up`: upload a voice clip and a photo through the form, watch the stage graph turn from
running to done, play the video and see its time advance, cancel a second, slow job and see it marked
cancelled. Screenshots at 1280 px and 375 px are saved under the pytest temporary directory
(``console-screens/``).

Without Chromium and chromedriver these tests are skipped, except in CI (``CI=true``), where they fail:
``.ci/run`` installs Debian's ``chromium`` and ``chromium-driver``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile

from pipeline.bus.natsserver import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]
CHROMIUM = ("/usr/bin/chromium", "chromium", "chromium-browser")
DRIVER = ("/usr/bin/chromedriver", "chromedriver")
TRANSCRIPT = "And so my fellow Americans"


def _find(names: tuple[str, ...]) -> str | None:
    for name in names:
        found = name if os.path.isabs(name) and os.access(name, os.X_OK) else shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def browser_binaries() -> tuple[str, str]:
    chromium, driver = _find(CHROMIUM), _find(DRIVER)
    if chromium is None or driver is None:
        message = "headless Chromium and chromedriver are needed (apt-get install chromium chromium-driver)"
        if os.environ.get("CI") == "true":
            pytest.fail(message + "; .ci/run installs them")
        pytest.skip(message)
    return chromium, driver


@pytest.fixture(scope="module")
def screens(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("console-screens")
    print(f"console screenshots: {path}")
    return path


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory, assets: Path) -> dict[str, Path]:
    """A 3-second cut of the JFK clip (the job to watch), and a 90-second voice (the job to cancel)."""
    folder = tmp_path_factory.mktemp("browser-media")
    audio, rate = soundfile.read(assets / "jfk.flac")
    short, long = folder / "ask-not.wav", folder / "long-speech.wav"
    soundfile.write(short, audio[int(0.3 * rate) : int(3.3 * rate)], rate)
    soundfile.write(long, np.concatenate([audio] * 8), rate)
    return {"short": short, "long": long, "photo": assets / "astronaut.png"}


@pytest.fixture(scope="module")
def console_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`mouthpiece up` in a fresh folder, its console on a free loopback port."""
    home = tmp_path_factory.mktemp("browser-stack")
    port = free_port()
    env = {
        **os.environ,
        "MOUTHPIECE_LOG_FORMAT": "json",
        "MOUTHPIECE_INGRESS_PORT": str(port),
        "MOUTHPIECE_RECONCILE_INTERVAL": "0",
        "MOUTHPIECE_DATA_DIR": str(home / "data"),
    }
    log = (home / "up.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "up"], cwd=home, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for(
            lambda: _answers(url + "/healthz"), 60, f"the console did not answer; see {home / 'up.log'}"
        )
        yield url
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="module")
def driver(browser_binaries: tuple[str, str]) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    chromium, chromedriver = browser_binaries
    options = Options()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--autoplay-policy=no-user-gesture-required", "--mute-audio"):  # fmt: skip
        options.add_argument(arg)
    browser = webdriver.Chrome(service=Service(chromedriver), options=options)
    browser.set_window_size(1280, 900)
    browser.set_page_load_timeout(60)
    yield browser
    browser.quit()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _wait_for(check: Any, timeout: float, message: str, every: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(every)
    raise AssertionError(message)


def _shoot(driver: Any, screens: Path, name: str) -> None:
    """Full-page screenshots at 1280 px and at a phone's 375 px; the window is put back to 1280."""
    for width, height in ((1280, 900), (375, 812)):
        driver.set_window_size(width, height)
        time.sleep(0.4)
        full = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(width, min(max(height, int(full) + 140), 4000))
        time.sleep(0.3)
        driver.save_screenshot(str(screens / f"{name}-{width}.png"))
    driver.set_window_size(1280, 900)


def _submit(driver: Any, url: str, voice: Path, photo: Path | None, **options: str) -> str:
    """Fill the new-job form like a person (files, options) and submit; the job id of the page the
    browser lands on."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    driver.get(url + "/new")
    driver.find_element(By.ID, "voice").send_keys(str(voice))
    if photo is not None:
        driver.find_element(By.ID, "faces").send_keys(str(photo))
    for name, value in options.items():
        if name == "transcript":
            driver.find_element(By.ID, "transcript").send_keys(value)
        else:
            Select(driver.find_element(By.ID, f"opt-{name}")).select_by_value(value)
    assert voice.name in driver.find_element(By.ID, "voice-drop").text  # the drop zone shows the choice
    driver.find_element(By.ID, "submit").click()
    _wait_for(lambda: "/jobs/j" in driver.current_url, 60, "the form did not lead to the job's page")
    return str(driver.current_url.rsplit("/", 1)[1].split("?")[0])


GRAPH_STATES = "return Array.from(document.querySelectorAll('#graph .box')).map(b => b.className.replace('box state-', ''))"


def test_upload_watch_play_and_cancel(
    driver: Any, console_url: str, media: dict[str, Path], screens: Path
) -> None:
    """A person's session: the job list, the form (voice + photo, soft subtitles), the job's graph going
    from running to done by live updates, the video playing with its subtitle track; a second, long job
    cancelled with the button and shown as cancelled; screenshots of each page at both widths."""
    from selenium.webdriver.common.by import By

    driver.get(console_url + "/")
    assert "No jobs yet" in driver.page_source
    _shoot(driver, screens, "1-empty-list")

    job = _submit(
        driver, console_url, media["short"], media["photo"], subtitles="soft", transcript=TRANSCRIPT
    )
    driver.execute_script("window.__sameDocument = true")  # gone if the page reloads
    seen: list[tuple[str, ...]] = []

    def done() -> bool:
        try:
            states = tuple(driver.execute_script(GRAPH_STATES))
        except Exception:  # the page is reloading (it does once, when the job finishes)
            return False
        if not seen or seen[-1] != states:
            seen.append(states)
        return len(states) == 5 and set(states) == {"done"}

    _wait_for(done, 240, f"the graph did not turn done; seen {seen}", every=0.05)
    assert any("running" in states for states in seen), seen  # it was watched while it ran
    assert seen.index(next(s for s in seen if "running" in s)) < len(seen) - 1

    def finished() -> bool:  # the graph may turn done a moment before the job's status says so
        try:
            badge = driver.find_element(By.ID, "job-state").text
            return badge == "done" and bool(driver.find_elements(By.ID, "player"))
        except Exception:  # the page is reloading
            return False

    _wait_for(finished, 15, "the job's page did not say done after its graph did")

    player = driver.find_element(By.ID, "player")
    driver.execute_script("arguments[0].scrollIntoView()", player)
    assert driver.execute_script("return arguments[0].textTracks.length", player) == 1
    player.click()  # press play
    time.sleep(0.3)
    if driver.execute_script("return arguments[0].paused", player):
        driver.execute_script("return arguments[0].play()", player)
    start = float(driver.execute_script("return arguments[0].currentTime", player))
    time.sleep(1.5)
    now = float(driver.execute_script("return arguments[0].currentTime", player))
    error = driver.execute_script("return arguments[0].error && arguments[0].error.message", player)
    assert now > start + 0.5, f"the video did not play (currentTime {start} -> {now}, error {error})"
    driver.execute_script("arguments[0].pause(); arguments[0].currentTime = 1.0", player)
    time.sleep(0.5)
    _shoot(driver, screens, "3-job-done")

    slow = _submit(driver, console_url, media["long"], None, renderer="viseme")
    assert slow != job
    _wait_for(  # the page of a job no stage has started yet reloads once its first record appears
        lambda: (
            driver.execute_script("return document.body.dataset.state") == "running"
            and "running" in driver.execute_script(GRAPH_STATES)
        ),
        60,
        "the slow job did not start",
    )
    driver.find_element(By.ID, "cancel-open").click()
    driver.find_element(By.ID, "cancel").click()
    _wait_for(lambda: "note=cancelled" in driver.current_url, 30, "cancel did not come back to the job")
    assert driver.find_element(By.ID, "job-state").text == "cancelled"
    assert "The job was cancelled." in driver.page_source
    _wait_for(
        lambda: "running" not in driver.execute_script(GRAPH_STATES), 60, "a stage kept running after cancel"
    )
    _shoot(driver, screens, "4-job-cancelled")

    driver.get(console_url + "/")
    rows = driver.find_elements(By.CSS_SELECTOR, "table.jobs tbody tr")
    assert [r.get_attribute("data-job") for r in rows] == [slow, job]
    assert "cancelled" in rows[0].text and "done" in rows[1].text
    _shoot(driver, screens, "5-list")
    driver.get(console_url + "/new")
    _shoot(driver, screens, "2-new-job")
    driver.get(console_url + "/ops")
    _shoot(driver, screens, "6-operations")
    assert len(list(screens.glob("*.png"))) == 12


def _job_done(url: str, job: str, timeout: float = 240) -> dict[str, Any]:
    def finished() -> dict[str, Any] | None:
        response = httpx.get(f"{url}/api/jobs/{job}", timeout=5)
        data = response.json().get("status", {}) if response.status_code == 200 else {}
        return data if data.get("state") in ("done", "failed", "cancelled") else None

    return dict(_wait_for(finished, timeout, f"job {job} did not finish", every=0.5))


BOX_GAPS = """return Array.from(document.querySelectorAll('#graph .box')).map(b => b.getBoundingClientRect())
  .map((r, i, all) => i ? Math.round(r.top - all[i - 1].bottom) : null).slice(1)"""


def test_a_phone_sees_burned_subtitles_once_even_gaps_and_the_voice_length(
    driver: Any, console_url: str, media: dict[str, Path], screens: Path, tmp_path: Path
) -> None:
    """At 375 px: a `burn` job's player does not lay the subtitle track over the burned text (the track
    is there, not shown); the stage boxes are evenly spaced; the input voice's player knows its length
    before it is played; a failed job says "No video: the job failed."; the Operations queues fit the
    screen without sideways scrolling and every cell says something."""
    from selenium.webdriver.common.by import By

    job = _submit(driver, console_url, media["short"], media["photo"], subtitles="burn", renderer="none")
    assert _job_done(console_url, job)["state"] == "done"
    driver.set_window_size(375, 812)
    driver.get(f"{console_url}/jobs/{job}")
    player = driver.find_element(By.ID, "player")
    assert driver.execute_script("return arguments[0].textTracks.length", player) == 1
    assert driver.execute_script("return arguments[0].textTracks[0].mode", player) != "showing"
    gaps = driver.execute_script(BOX_GAPS)
    assert len(gaps) == 4 and max(gaps) - min(gaps) <= 1, gaps
    voice = driver.find_element(By.ID, "voice-player")
    length = _wait_for(
        lambda: driver.execute_script("return arguments[0].duration", voice), 10, "no voice length", every=0.2
    )
    assert 2.5 < float(length) < 3.5
    _shoot(driver, screens, "7-phone-burn-job")

    noise = tmp_path / "static.png"
    import cv2

    cv2.imwrite(str(noise), np.random.default_rng(3).integers(0, 255, (256, 256, 3), dtype=np.uint8))
    driver.set_window_size(1280, 900)
    failed = _submit(driver, console_url, media["short"], noise, renderer="none")
    assert _job_done(console_url, failed)["state"] == "failed"
    driver.set_window_size(375, 812)
    driver.get(f"{console_url}/jobs/{failed}")
    assert driver.find_element(By.ID, "no-video").text == "No video: the job failed."

    driver.get(f"{console_url}/ops")
    table = driver.find_element(By.ID, "queues")
    sizes = driver.execute_script(
        "const s = arguments[0].parentElement; return [s.scrollWidth, s.clientWidth]", table
    )
    assert sizes[0] <= sizes[1], sizes
    cells = [c.text.strip() for c in table.find_elements(By.CSS_SELECTOR, "tbody td")]
    assert cells and all(cells), cells
    _shoot(driver, screens, "8-phone-ops")
    driver.set_window_size(1280, 900)
