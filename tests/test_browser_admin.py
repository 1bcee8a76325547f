"""The FAQ admin in a real browser: headless Chromium driven by Selenium against a live server.

Log in, add an FAQ with an alternative phrasing, try a question and see the match, import a CSV.
The suite's settings have no admin, so the settings of tests/test_django_faq_admin.py are applied
first and pytest-django's ``LiveServer`` is started after them (its request handler loads the
middleware when it starts, so the session-wide ``live_server`` fixture would run without it).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import override_settings

from django_semsim.faq.models import FAQ
from tests.test_django_faq_admin import ADMIN_SETTINGS, create_admin_log_table, drop_admin_log_table

pytestmark = pytest.mark.slow  # a live server and a real browser

CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM_CANDIDATES = (Path("/usr/bin/chromium"), Path("/usr/bin/chromium-browser"))


@pytest.fixture()
def live_admin(transactional_db, encoder) -> Iterator[str]:  # type: ignore[no-untyped-def]
    import django.contrib.admin
    from pytest_django.live_server_helper import LiveServer

    # the live server serves STATIC_URL from STATIC_ROOT: point it at the admin's own CSS and JS
    static_root = str(Path(django.contrib.admin.__file__).parent / "static")
    with override_settings(**ADMIN_SETTINGS, ALLOWED_HOSTS=["localhost", "127.0.0.1"], STATIC_ROOT=static_root):
        create_admin_log_table()
        server = LiveServer("localhost:0")
        try:
            User.objects.create_superuser("boss", "boss@example.com", "secret-pw")
            yield server.url
        finally:
            server.stop()
            drop_admin_log_table()


@pytest.fixture()
def browser(tmp_path: Path) -> Iterator[Any]:
    if not CHROMEDRIVER.exists():
        pytest.skip(f"{CHROMEDRIVER} is missing: install the Debian packages chromium and chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    binary = next((p for p in CHROMIUM_CANDIDATES if p.exists()), None) or shutil.which("chromium")
    if binary:
        options.binary_location = str(binary)
    for argument in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--window-size=1280,1600",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    driver.implicitly_wait(5)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for_text(browser: Any, text: str, timeout: float = 60) -> None:
    """Wait until the page shows ``text``: a click on submit returns before the next page loads."""
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, timeout).until(lambda driver: text in driver.page_source)


def test_admin_login_add_try_import(live_admin: str, browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    # log in
    browser.get(f"{live_admin}/admin/login/?next=/admin/semsim_faq/faq/")
    browser.find_element(By.NAME, "username").send_keys("boss")
    browser.find_element(By.NAME, "password").send_keys("secret-pw")
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    wait_for_text(browser, "Select FAQ to change")
    assert "Select FAQ to change" in browser.title, browser.page_source[:500]

    # add an FAQ with an alternative phrasing (the inline)
    browser.get(f"{live_admin}/admin/semsim_faq/faq/add/")
    browser.find_element(By.NAME, "question").send_keys("How do I return an item?")
    browser.find_element(By.NAME, "answer").send_keys("Start a return from Your orders within 30 days.")
    browser.find_element(By.NAME, "category").send_keys("orders")
    browser.find_element(By.NAME, "phrasings-0-text").send_keys("Can I send a product back for a refund?")
    browser.find_element(By.NAME, "_save").click()
    wait_for_text(browser, "was added successfully")
    assert FAQ.objects.get().alternatives() == ["Can I send a product back for a refund?"]

    # try a question: the new entry answers it
    browser.find_element(By.ID, "faq-try-link").click()
    browser.find_element(By.NAME, "question").send_keys("I want to send something back and get my money")
    browser.find_element(By.ID, "try-submit").click()
    wait_for_text(browser, 'id="verdict"')
    verdict = browser.find_element(By.ID, "verdict").text
    first = browser.find_element(By.CSS_SELECTOR, "#matches tr.match").text
    assert "How do I return an item?" in first
    assert "Answered by" in verdict and "How do I return an item?" in verdict
    assert float(browser.find_element(By.CSS_SELECTOR, "#matches tr.match td.similarity").text) > 0.3

    # import a CSV through the upload form
    csv_path = tmp_path / "faq.csv"
    csv_path.write_text(
        "faq_id,question,answer,category,alternatives\n"
        "ship,How long does shipping take?,3 to 5 working days.,delivery,When will my parcel arrive?\n"
        "pay,Which payment methods do you accept?,Cards and PayPal.,payments,\n",
        encoding="utf-8",
    )
    browser.get(f"{live_admin}/admin/semsim_faq/faq/")
    browser.find_element(By.ID, "faq-import-link").click()
    browser.find_element(By.NAME, "file").send_keys(str(csv_path))
    browser.find_element(By.ID, "import-submit").click()
    wait_for_text(browser, "Imported 2 FAQ entries from faq.csv: 2 new")
    assert "How long does shipping take?" in browser.page_source  # back on the list
    assert FAQ.objects.count() == 3

    # and the imported entry is found by its alternative phrasing
    browser.get(f"{live_admin}/admin/semsim_faq/faq/try/?question=when+does+my+parcel+arrive&k=3")
    assert "How long does shipping take?" in browser.find_element(By.CSS_SELECTOR, "#matches tr.match").text


def test_semantic_changelist_search(live_admin: str, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    for question, answer in (
        ("My bank card has not arrived yet", "Cards arrive within 7 working days."),
        ("How do I change my delivery address?", "Edit it under Your account."),
        ("Which payment methods do you accept?", "Cards and PayPal."),
    ):
        FAQ.objects.create(question=question, answer=answer)  # autocommit: encoded after each save
    browser.get(f"{live_admin}/admin/login/?next=/admin/semsim_faq/faq/")
    browser.find_element(By.NAME, "username").send_keys("boss")
    browser.find_element(By.NAME, "password").send_keys("secret-pw")
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    wait_for_text(browser, "Select FAQ to change")

    # no word in common with the entry: the search box finds it by meaning, ranked, with the similarity
    box = browser.find_element(By.ID, "searchbar")
    box.send_keys("card never came")
    box.submit()
    wait_for_text(browser, "column-search_similarity")
    rows = browser.find_elements(By.CSS_SELECTOR, "#result_list tbody tr")
    assert "My bank card has not arrived yet" in rows[0].text
    similarities = [
        float(e.text) for e in browser.find_elements(By.CSS_SELECTOR, "#result_list td.field-search_similarity")
    ]
    assert similarities == sorted(similarities, reverse=True) and similarities[0] > 0.3
    assert browser.find_element(By.CSS_SELECTOR, "#result_list td.field-vector_status").text == "current"
    # words and meaning by default: "card" is a word of the entry too, so both sides found it
    assert browser.find_element(By.ID, "semsim-search-mode").get_attribute("data-mode") == "hybrid"
    assert (
        browser.find_element(By.CSS_SELECTOR, "#result_list td.field-search_found_by").text == "meaning #1 · words #1"
    )

    # by meaning alone: one click, the same best entry, no "found by" column
    browser.find_element(By.LINK_TEXT, "Search by meaning instead").click()
    wait_for_text(browser, 'data-mode="meaning"')
    assert "My bank card has not arrived yet" in browser.find_elements(By.CSS_SELECTOR, "#result_list tbody tr")[0].text
    assert browser.find_elements(By.CSS_SELECTOR, "#result_list td.field-search_found_by") == []

    # keyword search is one click away, and finds nothing for these words
    browser.find_element(By.LINK_TEXT, "Search by keywords instead").click()
    wait_for_text(browser, 'data-mode="keywords"')
    assert browser.find_elements(By.CSS_SELECTOR, "#result_list tbody tr") == []

    # the change page lists similar entries
    faq = FAQ.objects.get(question="My bank card has not arrived yet")
    browser.get(f"{live_admin}/admin/semsim_faq/faq/{faq.pk}/change/")
    similar = browser.find_element(By.ID, "semsim-similar").text
    assert "Similar items" in similar and "Which payment methods do you accept?" in similar
