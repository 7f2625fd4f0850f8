"""End to end in a real browser: Debian's chromium (headless) driven by Selenium against a real uvicorn."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tests.service_util import Server, make_gallery, omniglot_drawings

CHROMIUM, DRIVER = shutil.which("chromium") or "/usr/bin/chromium", shutil.which("chromedriver") or "/usr/bin/chromedriver"
TOKEN = "browser-token-0123456789"

pytestmark = pytest.mark.skipif(
    not (Path(CHROMIUM).exists() and Path(DRIVER).exists()),
    reason="chromium and chromium-driver are not installed (apt-get install -y chromium chromium-driver)",
)


@pytest.fixture()
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--window-size=1200,1600",
    ):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=opts)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def test_enrol_two_identify_a_third_forget_one_in_the_page(tmp_path: Path, omniglot_dir: Path, browser) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    gallery = make_gallery(tmp_path / "page.gallery", omniglot_dir)
    drawings = omniglot_drawings(omniglot_dir, 2, 2, skip=40)
    (a, da), (b, db) = drawings.items()
    files = {}
    for name, data in (("a0", da[0]), ("b0", db[0]), ("a1", da[1])):
        files[name] = tmp_path / f"{name}.png"
        files[name].write_bytes(data)
    from selenium.common.exceptions import StaleElementReferenceException

    wait = WebDriverWait(browser, 30, ignored_exceptions=[StaleElementReferenceException])

    def shown_labels(d) -> list[str]:  # noqa: ANN001 -- read in one script: the grid re-renders under us
        return d.execute_script("return [...document.querySelectorAll('#classes li')].map(li => li.dataset.label)")

    with Server(gallery, token=TOKEN) as srv:
        browser.get(srv.url + "/")
        wait.until(lambda d: "classes" in d.find_element(By.ID, "summary").text)
        # the token is entered once, from the keyboard
        token = wait.until(EC.visibility_of_element_located((By.ID, "token")))
        token.send_keys(TOKEN + Keys.ENTER)
        wait.until(EC.invisibility_of_element_located((By.ID, "token-section")))
        for label, f in ((a, files["a0"]), (b, files["b0"])):
            browser.find_element(By.ID, "enrol-label").send_keys(label)
            browser.find_element(By.ID, "enrol-file").send_keys(str(f))
            browser.find_element(By.ID, "enrol-submit").click()
            wait.until(lambda d, label=label: label in d.find_element(By.ID, "enrol-result").text)
            assert "Enrolled" in browser.find_element(By.ID, "enrol-decision").text
        wait.until(lambda d: len(shown_labels(d)) == 2)
        cards = {li.get_attribute("data-label"): li.text for li in browser.find_elements(By.CSS_SELECTOR, "#classes li")}
        assert set(cards) == {a, b} and all("1 example" in t for t in cards.values())
        # identify another drawing of the first character
        browser.find_element(By.ID, "identify-file").send_keys(str(files["a1"]))
        browser.find_element(By.ID, "identify-submit").click()
        decision = wait.until(EC.visibility_of_element_located((By.ID, "identify-decision")))
        shown = decision.get_attribute("data-label")
        text = browser.find_element(By.ID, "identify-result").text
        assert "threshold" in text and a in text  # the top matches table lists the enrolled class
        shot = tmp_path / "identify.png"
        assert browser.save_screenshot(str(shot))
        element_png = decision.screenshot_as_png
        # forget the second class with the keyboard (focus the button, press Enter twice)
        forget = browser.find_element(By.CSS_SELECTOR, f'#classes li[data-label="{b}"] button.forget')
        forget.send_keys(Keys.ENTER)
        wait.until(
            lambda d: "Press again" in d.find_element(By.CSS_SELECTOR, f'#classes li[data-label="{b}"] button.forget').text
        )
        browser.find_element(By.CSS_SELECTOR, f'#classes li[data-label="{b}"] button.forget').send_keys(Keys.ENTER)
        wait.until(lambda d: shown_labels(d) == [a])
    # what the page showed is the gallery's own decision for that picture
    from oneshot.gallery import Gallery

    with Gallery.open(gallery, create=False) as g:
        assert [c.label for c in g.list()] == [a]
        g_truth = g.identify([da[1]], k=1)[0]
    assert shown == (g_truth.label or "unknown")
    assert decision_text_matches(shown, a)
    # the screenshot is a real picture of the page, and the result element is drawn in it
    page = np.asarray(Image.open(shot).convert("L"))
    elem = np.asarray(Image.open(io.BytesIO(element_png)).convert("L"))
    assert page.shape[0] > 300 and page.shape[1] > 300
    assert elem.size > 0 and elem.std() > 10  # text on a background, not a blank box


def decision_text_matches(shown: str | None, enrolled: str) -> bool:
    """The page shows either the enrolled class or "unknown" (below the calibrated threshold), nothing else."""
    return shown in (enrolled, "unknown")
