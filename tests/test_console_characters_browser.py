"""The console's Characters page in a real browser (headless Chromium, Selenium) against `mouthpiece up`:
add characters with a JPEG and a PNG made here (thumbnails load), refusals in a sentence with what was
typed kept, a job made on the New job page with a character (its page shows the time-left line while it
runs), and a character removed. Screenshots at 1280 px and 375 px under ``console-screens/``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import skimage.data

from tests.test_console_browser import (  # noqa: F401 (fixtures)
    _shoot,
    _wait_for,
    browser_binaries,
    console_url,
    driver,
    media,
    screens,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def faces(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("faces")
    face = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)
    jpg, png, text = folder / "pirate.jpg", folder / "ninja.png", folder / "notes.png"
    cv2.imwrite(str(jpg), face)
    cv2.imwrite(str(png), np.ascontiguousarray(face[:, ::-1]))
    text.write_text("this is a note, not a picture\n")
    return {"jpg": jpg, "png": png, "text": text}


def _add(driver: Any, url: str, name: str, image: Path, style: str = "") -> None:  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.expected_conditions import staleness_of
    from selenium.webdriver.support.ui import Select, WebDriverWait

    driver.get(url + "/characters")
    driver.find_element(By.ID, "character-name").send_keys(name)
    driver.find_element(By.ID, "character-image").send_keys(str(image))
    if style:
        Select(driver.find_element(By.ID, "character-style")).select_by_value(style)
    button = driver.find_element(By.ID, "add")
    button.click()
    WebDriverWait(driver, 30).until(staleness_of(button))  # the answer's page replaced the form
    _wait_for(lambda: driver.execute_script("return document.readyState") == "complete", 30, "no page")


def _names(driver: Any) -> list[str]:  # noqa: F811
    from selenium.webdriver.common.by import By

    return [e.get_attribute("data-name") for e in driver.find_elements(By.CSS_SELECTOR, "li.character")]


def test_characters_page_add_refuse_use_and_remove(
    driver: Any,  # noqa: F811
    console_url: str,  # noqa: F811
    faces: dict[str, Path],
    media: dict[str, Path],  # noqa: F811
    screens: Path,  # noqa: F811
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    driver.get(console_url + "/characters")
    assert driver.find_element(By.ID, "no-characters").is_displayed()
    _add(driver, console_url, "Pirate", faces["jpg"], style="cartoon")
    _wait_for(lambda: "note=added" in driver.current_url, 30, "adding did not come back to the list")
    assert driver.find_element(By.ID, "note").text == "The character was added."
    _add(driver, console_url, "Ninja", faces["png"])
    assert _names(driver) == ["Ninja", "Pirate"]
    loaded = "return Array.from(document.querySelectorAll('li.character img')).map(i => i.complete && i.naturalWidth)"
    _wait_for(lambda: all(driver.execute_script(loaded)), 10, "a thumbnail did not load")
    assert driver.execute_script(loaded) == [512, 512]
    assert "style cartoon" in driver.find_element(By.CSS_SELECTOR, "li.character[data-name=Pirate]").text
    _shoot(driver, screens, "c1-characters")

    _add(driver, console_url, "PIRATE", faces["png"])
    error = driver.find_element(By.ID, "form-error").text
    assert error.startswith("a character named 'Pirate' is already in the library")
    assert driver.find_element(By.ID, "character-name").get_attribute("value") == "PIRATE"  # kept
    _add(driver, console_url, "Notes", faces["text"])
    assert driver.find_element(By.ID, "form-error").text.startswith(
        "notes.png is not an image or a video (it is a text file)"
    )
    _shoot(driver, screens, "c2-refused")
    assert _names(driver) == ["Ninja", "Pirate"]  # nothing half-added

    driver.get(console_url + "/new")
    driver.find_element(By.ID, "voice").send_keys(str(media["short"]))
    Select(driver.find_element(By.ID, "character")).select_by_value("Pirate")
    driver.find_element(By.ID, "submit").click()
    _wait_for(lambda: "/jobs/j" in driver.current_url, 60, "the form did not lead to the job's page")
    eta_line = _wait_for(
        lambda: driver.execute_script("const e = document.getElementById('eta'); return e && e.textContent"),
        120,
        "the job's page showed no time-left line while it ran",
    )
    assert " % · " in eta_line or "time left" in eta_line or "estimate" in eta_line
    _wait_for(lambda: driver.execute_script("return document.body.dataset.state") == "done", 240, "not done")
    assert "Pirate" in driver.find_element(By.TAG_NAME, "main").text
    inputs = "return Array.from(document.querySelectorAll('img[src*=\"/inputs/\"]')).map(i => i.complete && i.naturalWidth)"
    _wait_for(
        lambda: driver.execute_script(inputs) == [512],
        10,
        "the character's picture is not shown as the input",
    )
    _shoot(driver, screens, "c3-job-with-character")

    driver.get(console_url + "/characters")
    driver.find_element(By.CSS_SELECTOR, "li.character[data-name=Ninja] button").click()
    _wait_for(lambda: "note=removed" in driver.current_url, 30, "removing did not come back to the list")
    assert _names(driver) == ["Pirate"]
    _shoot(driver, screens, "c4-removed")
