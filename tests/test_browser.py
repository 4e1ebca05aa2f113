"""The web UI in a real headless Chromium (Debian's chromium + chromedriver), screenshots kept."""
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from app.config import PROJECT_ROOT
from tests.conftest import SHARED_DATA

SCREENSHOTS = PROJECT_ROOT / "test-artifacts" / "screenshots"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
# The two screens every new page test runs at: a laptop and a phone.
WIDTHS = [(1280, 900), (390, 844)]


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not Path(CHROMIUM).exists() or not Path(CHROMEDRIVER).exists():
        pytest.fail("Debian's chromium and chromium-driver are needed: apt-get install -y chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium')}", "--window-size=1000,1200"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()


def wait_for_text(driver, element_id: str, timeout: float = 15) -> str:
    WebDriverWait(driver, timeout).until(lambda d: d.find_element(By.ID, element_id).text.strip())
    return driver.find_element(By.ID, element_id).text


def test_review_page_predicts_and_takes_feedback(browser, live_server):
    browser.get(live_server + "/ui/review")
    browser.find_element(By.ID, "review").send_keys("A gorgeous, funny and moving film. I loved every minute :)")
    browser.find_element(By.CSS_SELECTOR, "#review-form button[type=submit]").click()
    assert wait_for_text(browser, "sentiment") == "positive"
    browser.find_element(By.ID, "incorrect").click()
    status = wait_for_text(browser, "feedback-status")
    assert "stored as negative" in status
    # One answer per prediction: both buttons are disabled until the next one.
    assert not browser.find_element(By.ID, "incorrect").is_enabled()
    assert not browser.find_element(By.ID, "correct").is_enabled()
    browser.save_screenshot(str(SCREENSHOTS / "review.png"))


def test_classify_page_uploads_a_cell(browser, live_server):
    cell = next((SHARED_DATA / "malaria" / "Parasitized").glob("*.png"))
    browser.get(live_server + "/ui/classify")
    browser.find_element(By.ID, "image").send_keys(str(cell))
    browser.find_element(By.CSS_SELECTOR, "#classify-form button[type=submit]").click()
    label = wait_for_text(browser, "label")
    assert label in ("Parasitized", "Uninfected")
    meters = browser.find_elements(By.CSS_SELECTOR, "#probabilities meter")
    assert len(meters) == 2
    # The preview is a blob: URL, which the page's CSP must allow.
    WebDriverWait(browser, 10).until(lambda d: d.execute_script(
        "return document.getElementById('preview').naturalWidth") > 0)
    assert "not for diagnosis" in browser.find_element(By.CSS_SELECTOR, ".note").text
    browser.save_screenshot(str(SCREENSHOTS / "classify.png"))


def test_titles_icon_and_way_back_from_the_docs(browser, live_server):
    browser.get(live_server + "/")
    assert browser.title == "modelserve"
    browser.get(live_server + "/ui/review")
    assert browser.title == "Reviews · modelserve"
    import urllib.request

    with urllib.request.urlopen(live_server + "/favicon.ico") as icon:
        assert icon.status == 200 and icon.headers["Content-Type"].startswith("image/svg+xml")
    browser.get(live_server + "/docs")
    browser.find_element(By.LINK_TEXT, "\u2190 modelserve home").click()
    WebDriverWait(browser, 10).until(lambda d: d.title == "modelserve")


def test_classify_page_shows_errors(browser, live_server, tmp_path):
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("definitely not a PNG")
    browser.get(live_server + "/ui/classify")
    browser.find_element(By.ID, "image").send_keys(str(not_an_image))
    browser.find_element(By.CSS_SELECTOR, "#classify-form button[type=submit]").click()
    assert "not a PNG or JPEG" in wait_for_text(browser, "classify-error")


@pytest.mark.parametrize("size", WIDTHS, ids=["desktop", "phone"])
def test_models_page_is_model_cards_flagships_first(browser, live_server, size):
    browser.set_window_size(*size)
    browser.get(live_server + "/ui/models")
    headings = [h.text.split()[0] for h in browser.find_elements(By.CSS_SELECTOR, "article h2")]
    assert headings[:2] == ["review_sentiment", "malaria_cell"] and headings[-1] == "decision_tree"
    jumps = browser.find_elements(By.CSS_SELECTOR, "nav.jump a")
    assert [j.text.split()[0] for j in jumps] == headings
    card = browser.find_element(By.ID, "malaria_cell-v4")
    text = card.text
    for part in ("Intended use", "Data", "Held-out figures", "Limitations", "not for diagnosis",
                 "5-fold cross-validation by patient", "Not clinically validated", "In production", "live accuracy"):
        assert part in text, part
    height = browser.execute_script("return document.documentElement.scrollHeight")
    assert height < (3000 if size[0] > 1000 else 6000), height  # plots fold away until asked for (4,450 px before)
    jumps[1].click()
    WebDriverWait(browser, 5).until(lambda d: d.execute_script("return window.scrollY") > 0)
    card.find_element(By.CSS_SELECTOR, "details.plots-box summary").click()
    captions = [c.text for c in card.find_elements(By.CSS_SELECTOR, "figcaption")]
    assert "Training accuracy by epoch of the float32 network of version 3, which this version quantizes" in captions
    assert browser.execute_script("return document.documentElement.scrollWidth") <= size[0]
    browser.save_screenshot(str(SCREENSHOTS / f"models-cards-{size[0]}.png"))


def open_every_plot_box(browser):
    for summary in browser.find_elements(By.CSS_SELECTOR, "details.plots-box summary"):
        browser.execute_script("arguments[0].parentElement.open = true", summary)


def test_models_page_lists_models_with_plots(browser, live_server):
    browser.set_window_size(1000, 1200)
    browser.get(live_server + "/ui/models")
    open_every_plot_box(browser)
    headings = [h.text for h in browser.find_elements(By.CSS_SELECTOR, "article h2")]
    assert any(h.startswith("malaria_cell") for h in headings) and any(h.startswith("review_sentiment") for h in headings)
    for img in browser.find_elements(By.CSS_SELECTOR, "article img"):  # lazy images load once scrolled to
        browser.execute_script("arguments[0].scrollIntoView()", img)
        WebDriverWait(browser, 10).until(lambda d: d.execute_script(
            "return arguments[0].complete && arguments[0].naturalWidth > 0", img))
    sizes = browser.execute_script("""return [...document.querySelectorAll('article img')].map(i => [
        i.getAttribute('src'), i.clientWidth, i.naturalWidth, getComputedStyle(i).imageRendering,
        i.parentElement.getAttribute('href')])""")
    for src, shown, natural, rendering, link in sizes:
        assert rendering != "pixelated" and link == src  # smooth scaling; a tap opens it at full size
        assert shown <= natural
    # Plots drawn at 200 dpi show at half their pixels, at the size they were drawn for: two per row.
    panels = [s for s in sizes if s[2] == 630]
    assert panels and all(s[1] == 315 for s in panels)
    browser.save_screenshot(str(SCREENSHOTS / "models.png"))


def test_phone_sized_screen(browser, live_server):
    browser.set_window_size(390, 844)
    try:
        browser.get(live_server + "/ui/review")
        width = browser.execute_script("return document.documentElement.scrollWidth")
        assert width <= 390  # no horizontal scrolling on a phone
        browser.save_screenshot(str(SCREENSHOTS / "review-phone.png"))
        browser.get(live_server + "/ui/models")
        open_every_plot_box(browser)
        assert browser.execute_script("return document.documentElement.scrollWidth") <= 390
        shown = browser.execute_script("return [...document.querySelectorAll('article img')].map(i => i.clientWidth)")
        assert shown and max(shown) <= 390 - 2 * 16
        browser.save_screenshot(str(SCREENSHOTS / "models-phone.png"))
    finally:
        browser.set_window_size(1000, 1200)


def test_jobs_page_text_job_after_choosing_a_file_then_a_worker(browser, tmp_path):
    """The form follows the chosen model (a file picked for an image model is not sent once a text model is
    chosen); the page says when no worker has taken the job, offers Cancel, and shows a readable result."""
    import threading

    from selenium.webdriver.support.ui import Select

    from app.jobs.pull import Server, run_worker
    from app.models.registry import ModelRegistry
    from tests.conftest import SAVED_MODELS, run_gunicorn

    token = "browser-worker-token"
    cell = next((SHARED_DATA / "malaria" / "Parasitized").glob("*.png"))
    browser.set_window_size(1280, 900)
    with run_gunicorn(tmp_path, {"MODELSERVE_WORKER_TOKEN": token}) as (base, _):
        browser.get(base + "/ui/jobs")
        model = Select(browser.find_element(By.ID, "model"))
        assert model.first_selected_option.get_attribute("value") == "review_sentiment"  # the flagship, not a-z
        model.select_by_value("malaria_cell")
        assert not browser.find_element(By.ID, "text").is_displayed()
        browser.find_element(By.ID, "file").send_keys(str(cell))
        model.select_by_value("review_sentiment")
        assert browser.execute_script("return document.getElementById('file').files.length") == 0
        assert not browser.find_element(By.ID, "file").is_displayed()
        submit = browser.find_element(By.CSS_SELECTOR, "#job-form button[type=submit]")

        browser.find_element(By.ID, "text").send_keys("Not worth your evening.")
        submit.click()
        WebDriverWait(browser, 15).until(lambda d: "waiting for a worker" in d.find_element(By.ID, "status").text)
        browser.find_element(By.ID, "cancel").click()
        WebDriverWait(browser, 15).until(lambda d: ": canceled." in d.find_element(By.ID, "status").text)
        assert not browser.find_element(By.ID, "cancel").is_displayed()

        text = browser.find_element(By.ID, "text")
        text.clear()
        text.send_keys("A tender, funny, beautifully acted film.")
        submit.click()
        WebDriverWait(browser, 15).until(lambda d: "no worker has taken it yet" in d.find_element(By.ID, "status").text)
        assert "modelserve worker --server URL" in browser.find_element(By.ID, "status").text

        registry = ModelRegistry(SAVED_MODELS, {"review_sentiment"})
        registry.load_all()
        stop = threading.Event()
        worker = threading.Thread(target=run_worker, args=(Server(base, token), registry, ["review_sentiment"]),
                                  kwargs={"wait": 1, "stop": stop, "name": "browser-worker"}, daemon=True)
        worker.start()
        try:
            WebDriverWait(browser, 30).until(lambda d: ": succeeded." in d.find_element(By.ID, "status").text)
        finally:
            stop.set()
            worker.join(timeout=10)
        summary = browser.find_element(By.ID, "summary").text
        assert summary.startswith("Prediction: positive") and re.search(r"positive: \d+\.\d %", summary)
        browser.find_element(By.CSS_SELECTOR, "#raw-box summary").click()
        assert '"label": "positive"' in browser.find_element(By.ID, "result").text
        assert submit.is_enabled()
        browser.save_screenshot(str(SCREENSHOTS / "jobs.png"))


@pytest.mark.parametrize("size", WIDTHS, ids=["desktop", "phone"])
def test_a_failed_review_takes_the_earlier_answer_and_its_buttons_away(browser, live_server, size):
    browser.set_window_size(*size)
    browser.get(live_server + "/ui/review")
    box = browser.find_element(By.ID, "review")
    box.send_keys("A gorgeous, funny and moving film.")
    browser.find_element(By.CSS_SELECTOR, "#review-form button[type=submit]").click()
    assert wait_for_text(browser, "sentiment") == "positive"
    box.clear()
    box.send_keys("   ")  # passes the form's `required`, refused by the server as blank
    browser.find_element(By.CSS_SELECTOR, "#review-form button[type=submit]").click()
    assert wait_for_text(browser, "review-error")
    assert not browser.find_element(By.ID, "review-result").is_displayed()
    assert not browser.find_element(By.ID, "correct").is_enabled()
    assert not browser.find_element(By.ID, "incorrect").is_enabled()


@pytest.mark.parametrize("size", WIDTHS, ids=["desktop", "phone"])
def test_pages_say_so_when_the_server_cannot_be_reached(browser, live_server, size):
    """With the network cut, each page says the server could not be reached and its button works again."""
    cell = next((SHARED_DATA / "malaria" / "Parasitized").glob("*.png"))
    browser.set_window_size(*size)
    # (page, the field to fill, what goes in it, the form, where the page says what went wrong)
    for page, field, value, form, message in (("classify", "image", str(cell), "classify-form", "classify-error"),
                                              ("review", "review", "A fine film.", "review-form", "review-error"),
                                              ("jobs", "text", "A fine film.", "job-form", "status")):
        browser.get(f"{live_server}/ui/{page}")
        browser.find_element(By.ID, field).send_keys(value)
        browser.set_network_conditions(offline=True, latency=0, download_throughput=0, upload_throughput=0)
        try:
            submit = browser.find_element(By.CSS_SELECTOR, f"#{form} button[type=submit]")
            submit.click()
            assert "could not be reached" in wait_for_text(browser, message), page
            assert submit.is_enabled(), page  # not stuck disabled until a reload
        finally:
            browser.delete_network_conditions()


@pytest.mark.parametrize("size", WIDTHS, ids=["desktop", "phone"])
def test_an_image_that_is_not_a_cell_is_flagged_on_the_page(browser, live_server, size, tmp_path):
    import numpy as np
    from PIL import Image

    noise = tmp_path / "noise.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (120, 160, 3)).astype(np.uint8)).save(noise)
    browser.set_window_size(*size)
    browser.get(live_server + "/ui/classify")
    browser.find_element(By.ID, "image").send_keys(str(noise))
    browser.find_element(By.CSS_SELECTOR, "#classify-form button[type=submit]").click()
    assert "does not look like the thin-smear cell crops" in wait_for_text(browser, "cell-warning")
    browser.save_screenshot(str(SCREENSHOTS / f"classify-not-a-cell-{size[0]}.png"))
    cell = next((SHARED_DATA / "malaria" / "Uninfected").glob("*.png"))
    browser.find_element(By.ID, "image").send_keys(str(cell))
    browser.find_element(By.CSS_SELECTOR, "#classify-form button[type=submit]").click()
    WebDriverWait(browser, 15).until(lambda d: not d.find_element(By.ID, "cell-warning").is_displayed())
    assert browser.find_element(By.ID, "label").text in ("Parasitized", "Uninfected")


@pytest.mark.parametrize("size", WIDTHS, ids=["desktop", "phone"])
def test_classify_page_examples_heat_map_latency_and_code(browser, live_server, size):
    """One click on an example cell: the answer, its latency, the heat map beside the cell with its legend and
    caption, and the request as curl and Python."""
    browser.set_window_size(*size)
    browser.get(live_server + "/ui/classify")
    examples = browser.find_elements(By.CSS_SELECTOR, "button.example")
    assert len(examples) == 6 and {e.text for e in examples} == {"Parasitized", "Uninfected"}
    examples[0].click()
    assert wait_for_text(browser, "label") == "Parasitized"
    assert re.fullmatch(r"answered in \d+ ms, with the heat map", browser.find_element(By.ID, "latency").text)
    WebDriverWait(browser, 10).until(lambda d: d.find_element(By.ID, "explanation").is_displayed())
    heat = browser.find_element(By.ID, "heatmap")
    WebDriverWait(browser, 10).until(lambda d: d.execute_script("return arguments[0].naturalWidth", heat) == 256)
    preview = browser.find_element(By.ID, "preview")
    assert abs(preview.size["width"] - heat.size["width"]) <= 1  # the same scale, side by side or stacked
    assert "lowers the model's probability of Parasitized" in browser.find_element(By.ID, "heatmap-caption").text
    assert browser.find_element(By.CSS_SELECTOR, "#explanation .legend").size["height"] > 0
    assert browser.find_element(By.ID, "cell-warning").is_displayed() is False
    browser.find_element(By.CSS_SELECTOR, "details.code summary").click()
    curl = browser.find_element(By.ID, "code-curl").text
    assert curl.startswith("curl -F image=@'C101P62ThinF_IMG_20150918_151006_cell_73.png' http") and "/classify" in curl
    assert "requests.post(" in browser.find_element(By.ID, "code-python").text
    width = browser.execute_script("return document.documentElement.scrollWidth")
    assert width <= size[0]  # nothing wider than the screen
    browser.save_screenshot(str(SCREENSHOTS / f"classify-example-{size[0]}.png"))


@pytest.mark.parametrize("size", WIDTHS, ids=["desktop", "phone"])
def test_review_page_examples_latency_and_a_copyable_call_that_runs(browser, live_server, size):
    browser.set_window_size(*size)
    browser.get(live_server + "/ui/review")
    browser.find_elements(By.CSS_SELECTOR, "button.example")[1].click()
    assert wait_for_text(browser, "sentiment") == "negative"
    assert re.fullmatch(r"answered in \d+ ms", browser.find_element(By.ID, "latency").text)
    box = browser.find_element(By.ID, "review")
    box.clear()
    box.send_keys("It's a wonderful film, isn't it? \"Superb\".")
    browser.find_element(By.CSS_SELECTOR, "#review-form button[type=submit]").click()
    WebDriverWait(browser, 15).until(lambda d: d.find_element(By.ID, "sentiment").text == "positive")
    browser.find_element(By.CSS_SELECTOR, "details.code summary").click()
    curl = browser.find_element(By.ID, "code-curl").text
    shown = browser.find_element(By.ID, "probability").text
    done = subprocess.run(curl + " --silent --show-error", shell=True, capture_output=True, text=True, timeout=30)
    answer = json.loads(done.stdout)
    assert answer["label"] == "positive" and f"{100 * answer['probability_positive']:.1f} %" == shown
    assert browser.execute_script("return document.documentElement.scrollWidth") <= size[0]


def test_swagger_try_it_out_for_review_starts_from_a_working_request(browser, live_server):
    browser.set_window_size(1280, 900)
    browser.get(live_server + "/docs")
    block = WebDriverWait(browser, 20).until(lambda d: d.find_element(By.ID, "operations-review-review_classify_review"))
    block.find_element(By.CSS_SELECTOR, ".opblock-summary").click()
    WebDriverWait(browser, 10).until(lambda d: block.find_element(By.CSS_SELECTOR, ".try-out__btn")).click()
    field = WebDriverWait(browser, 10).until(
        lambda d: block.find_element(By.CSS_SELECTOR, ".opblock-body input[placeholder='review']"))
    text = field.get_attribute("value")
    assert "A moving, beautifully acted film" in text, text
    block.find_element(By.CSS_SELECTOR, ".execute").click()
    live = WebDriverWait(browser, 15).until(lambda d: block.find_element(By.CSS_SELECTOR, ".live-responses-table"))
    WebDriverWait(browser, 15).until(lambda d: '"label"' in live.text)
    assert '"label": "positive"' in live.text and live.text.split("\n")[1] == "200"
