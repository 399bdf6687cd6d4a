"""Debian's headless Chromium at a phone's size, driven by selenium; never downloads anything."""

import os
import shutil
import tempfile
from pathlib import Path

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.wait import WebDriverWait

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "pages"
PHONE_WIDTH, PHONE_HEIGHT = 390, 844


class PhoneBrowser:
    """A mobile-sized Chromium: open pages, press buttons, measure and photograph them."""

    def __init__(self):
        os.environ["SE_OFFLINE"] = "true"  # selenium must not fetch drivers: the pinned one is here
        self.profile = tempfile.mkdtemp(prefix="sa-chromium-")
        options = webdriver.ChromeOptions()
        options.binary_location = "/usr/bin/chromium"
        for flag in (
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--disable-dev-shm-usage",
            f"--user-data-dir={self.profile}",
        ):
            options.add_argument(flag)
        self.driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
        self.driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": PHONE_WIDTH, "height": PHONE_HEIGHT, "deviceScaleFactor": 2, "mobile": True},
        )

    def open(self, url: str) -> None:
        """Go to a URL and follow its redirects like a phone's browser."""
        self.driver.get(url)

    def text(self) -> str:
        """The page's visible text."""
        return self.driver.find_element(By.TAG_NAME, "body").text

    def press(self, label: str) -> None:
        """Tap the button whose visible label is `label`."""
        old_page = self.driver.find_element(By.TAG_NAME, "html")
        for button in self.driver.find_elements(By.TAG_NAME, "button"):
            if button.text.strip() == label:
                button.click()
                WebDriverWait(self.driver, 15, ignored_exceptions=(WebDriverException,)).until(
                    lambda _: _gone(old_page)
                )
                return
        raise AssertionError(f"no button {label!r} on: {self.text()}")

    def scroll_width(self) -> int:
        """The document's width as laid out: over the viewport means sideways scrolling."""
        return self.driver.execute_script("return document.documentElement.scrollWidth")

    def smallest_button_height(self) -> float:
        """The height of the smallest touch target on the page, in CSS pixels."""
        return self.driver.execute_script(
            "return Math.min(...[...document.querySelectorAll('button')]"
            ".map(b => b.getBoundingClientRect().height))"
        )

    def screenshot(self, name: str) -> Path:
        """Keep a picture of the page as a test artefact."""
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.driver.save_screenshot(str(path))
        return path

    def quit(self) -> None:
        """Close the browser and forget its profile."""
        self.driver.quit()
        shutil.rmtree(self.profile, ignore_errors=True)


def _gone(element) -> bool:
    """True once the element's page has been replaced (mid-navigation answers are retried)."""
    try:
        return not element.tag_name
    except StaleElementReferenceException:
        return True
