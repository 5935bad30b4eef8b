"""Drive the Gradio app (mirasol_hf/app.py) in headless Chromium, as a person would: used by tests/test_app.py and,
run as a script, to make the screenshot in docs/:

    python tests/app_browser.py docs/app_screenshot.png   # the README's sample clip and its five questions

The app runs in its own process on 127.0.0.1 with an audit hook that logs every connection or name lookup to
another host; the browser logs every request it makes. Both logs are returned so a caller can check that nothing
reached the network.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1000",
    # A fake camera and microphone (a test pattern and a beep), allowed without asking: the webcam recording path.
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
)
STARTUP_TIMEOUT = 180  # seconds for the app to import torch, transformers and gradio on a busy machine
ANSWER_TIMEOUT = 120
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
# How the app's status starts when it cannot answer (mirasol_hf/app.py's `ask`).
REFUSALS = ("Could not", "Upload or record", "Write at least")

# Runs the app in a child process; every connection or name lookup outside this machine is written to a log.
SERVE_APP = r"""
import sys

log_path, model, port = sys.argv[1], sys.argv[2], sys.argv[3]
LOCAL = {"127.0.0.1", "localhost", "::1", "0.0.0.0", None, ""}


def log_network(event, args):
    if event == "socket.connect" and isinstance(args[1], tuple):
        host = args[1][0]
    elif event == "socket.getaddrinfo":
        host = args[0]
    else:
        return
    host = host.decode() if isinstance(host, bytes) else host
    if host not in LOCAL:
        with open(log_path, "a") as log:
            log.write(f"{event} {host!r}\n")


sys.addaudithook(log_network)
from mirasol_hf.app import main

main(["--model", model, "--port", port])
"""


def browser_missing_reason() -> str | None:
    """Why the browser test cannot run here, or None when it can."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.path.exists(path):
            return f"{path} is not installed (Debian: apt-get install -y chromium chromium-driver; .ci/run does it)"
    return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class AppServer:
    """The app on 127.0.0.1 in a child process: `with AppServer(model, folder) as app: app.wait(); app.url`.

    Starting does not wait, so the caller can work while the app imports; `network_attempts()` lists what the
    audit hook saw the app try to reach outside this machine.
    """

    def __init__(self, model: str, folder):
        self.model = model
        self.folder = Path(folder)
        self.url = f"http://127.0.0.1:{free_port()}/"
        self.network_log = self.folder / "app_network.log"
        self.output_log = self.folder / "app_output.log"

    def __enter__(self):
        self.network_log.write_text("")
        self._output = open(self.output_log, "w")
        port = self.url.rstrip("/").rsplit(":", 1)[1]
        self.process = subprocess.Popen(
            [sys.executable, "-c", SERVE_APP, str(self.network_log), self.model, port],
            stdout=self._output,
            stderr=subprocess.STDOUT,
            env={**os.environ, "GRADIO_TEMP_DIR": str(self.folder / "gradio")},
        )
        return self

    def wait(self):
        """Block until the page answers (or raise with the app's output)."""
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"the app exited with {self.process.returncode}: {self.output_log.read_text()}")
            try:
                with urllib.request.urlopen(self.url, timeout=5):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the app did not answer on {self.url} within {STARTUP_TIMEOUT} s")
                time.sleep(0.3)

    def network_attempts(self) -> list[str]:
        return self.network_log.read_text().splitlines()

    def __exit__(self, *exc_info):
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._output.close()


@contextlib.contextmanager
def open_browser(folder):
    """Headless Debian Chromium through selenium, with a fresh profile in `folder` and request logging on."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="chromium_profile_", dir=folder)
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def outside_requests(driver) -> list[str]:
    """Every http(s) or ws(s) URL the page asked for so far that is not on this machine (Chromium's performance
    log; chrome:// pages of the browser itself are not network)."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] in ("Network.requestWillBeSent", "Network.webSocketCreated"):
            params = message["params"]
            urls.append(params["request"]["url"] if "request" in params else params["url"])
    return [url for url in urls if url.split(":")[0] in ("http", "https", "ws", "wss")
            and urllib.parse.urlsplit(url).hostname not in LOCAL_HOSTS]


def _wait(driver, condition, timeout: float, what: str):
    """`condition(driver)` once it is true; a timeout says what was awaited and what the page showed."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.2).until(condition)
    except TimeoutException:
        page = driver.find_element(By.TAG_NAME, "body").text
        raise TimeoutError(f"waited {timeout} s for {what}; the page shows:\n{page}") from None


def _press_answer(driver, num_questions: int) -> list[str]:
    """Press Answer on a fresh page; the answers once the table has them (none when the status says why not)."""
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, "ask").click()

    def finished(d):  # (while the app works, the status shows Gradio's progress text)
        answers = d.find_elements(By.CSS_SELECTOR, "#answers td.answer")
        status = d.find_element(By.ID, "status").text
        return len(answers) == num_questions or status.startswith(REFUSALS)

    _wait(driver, finished, ANSWER_TIMEOUT, "the answers")
    return [cell.text for cell in driver.find_elements(By.CSS_SELECTOR, "#answers td.answer")]


def ask_in_page(driver, url: str, video, questions: list[str], screenshot=None) -> dict:
    """Open the app (afresh), upload `video`, type `questions` one per line, press Answer and read the page.

    Returns `{"answers": [...], "attention": ["37%", ...] (the table's cells, row by row), "status": str,
    "chunk_picture": PIL image or None, "page_text": str}`; saves a screenshot of the whole page to `screenshot`.
    """
    from PIL import Image
    from selenium.webdriver.common.by import By

    driver.get(url)
    _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#video input[type=file]"), 60, "the upload box")
    driver.find_element(By.CSS_SELECTOR, "#video input[type=file]").send_keys(str(Path(video).resolve()))
    # The upload is done when the player plays the app's copy of the file (served from its upload folder).
    _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#video video[src*='file=']"), 60, "the uploaded video")
    box = driver.find_element(By.CSS_SELECTOR, "#questions textarea")
    box.clear()
    box.send_keys("\n".join(questions))
    answers = _press_answer(driver, len(questions))
    attention = [cell.text for cell in driver.find_elements(By.CSS_SELECTOR, "#answers td.attention")]
    picture = None
    if answers:
        _wait(driver, lambda d: d.execute_script(
            "const img = document.querySelector('#chunks img'); return img && img.complete && img.naturalWidth > 0;"
        ), 30, "the chunk picture")
        encoded = driver.execute_async_script(
            "const img = document.querySelector('#chunks img');"
            "const done = arguments[arguments.length - 1];"
            "fetch(img.src).then(r => r.blob()).then(b => { const f = new FileReader();"
            " f.onload = () => done(f.result.split(',')[1]); f.readAsDataURL(b); });"
        )
        picture = Image.open(io.BytesIO(base64.b64decode(encoded))).convert("RGB")
    if screenshot is not None:
        content = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
        shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": content["width"], "height": content["height"], "scale": 1},
        })
        Path(screenshot).write_bytes(base64.b64decode(shot["data"]))
    return {
        "answers": answers,
        "attention": attention,
        "status": driver.find_element(By.ID, "status").text,
        "chunk_picture": picture,
        "page_text": driver.find_element(By.TAG_NAME, "body").text,
    }


def record_in_page(driver, url: str, seconds: float, questions: list[str]) -> dict:
    """Open the app, record `seconds` from the (fake) webcam, ask `questions`; returns the answers and the path of the
    recording the app received (the file the page plays, in the app's upload folder)."""
    from selenium.webdriver.common.by import By

    driver.get(url)
    _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#video button[aria-label='Capture from camera']"), 60,
          "the camera source")
    driver.find_element(By.CSS_SELECTOR, "#video button[aria-label='Capture from camera']").click()
    access = "//*[@id='video']//button[contains(., 'Access Webcam')]"
    _wait(driver, lambda d: d.find_elements(By.XPATH, access), 30, "the webcam button")
    driver.find_element(By.XPATH, access).click()
    _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#video button.capture-button"), 30, "the record button")
    driver.find_element(By.CSS_SELECTOR, "#video button.capture-button").click()
    time.sleep(seconds)
    driver.find_element(By.CSS_SELECTOR, "#video button.capture-button").click()
    _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#video video[src*='file=']"), 30, "the recording")
    source = driver.find_element(By.CSS_SELECTOR, "#video video").get_attribute("src")
    driver.find_element(By.CSS_SELECTOR, "#questions textarea").send_keys("\n".join(questions))
    return {
        "recording": urllib.parse.unquote(source.split("file=", 1)[1]),
        "answers": _press_answer(driver, len(questions)),
        "status": driver.find_element(By.ID, "status").text,
    }


# How the stream tab's status reads once it stops looking for answers (mirasol_hf/app.py's `_watch_status`).
WATCH_ENDINGS = ("Done:", "Could not", "The stream failed", "Give a stream", "Write at least", "Ask every")


def watch_in_page(driver, url: str, source: str, questions: list[str], every: float) -> dict:
    """Open the app's "Watch a stream" tab, give `source`, `questions` and `every`, press Start and wait until the
    stream ends (or the status says why it cannot be watched).

    Returns `{"rows": [{"first_chunk", "last_chunk", "span", "question", "answer", "attention": ["37%", ...]}, ...]
    (newest first), "statuses": [every status seen while waiting], "status": str, "page_text": str}`.
    """
    from selenium.webdriver.common.by import By

    _start_watching(driver, url, source, questions, every)
    statuses = []

    def ended(d):
        status = d.find_element(By.ID, "watch-status").text
        if status and (not statuses or statuses[-1] != status):
            statuses.append(status)
        return status.startswith(WATCH_ENDINGS)

    _wait(driver, ended, ANSWER_TIMEOUT, "the end of the stream")
    rows = []
    for row in driver.find_elements(By.CSS_SELECTOR, "#watch-answers tbody tr"):
        rows.append({
            "first_chunk": int(row.get_attribute("data-first-chunk")),
            "last_chunk": int(row.get_attribute("data-last-chunk")),
            "span": row.find_element(By.CSS_SELECTOR, "td.span").text,
            "question": row.find_element(By.CSS_SELECTOR, "td.question").text,
            "answer": row.find_element(By.CSS_SELECTOR, "td.answer").text,
            "attention": [cell.text.splitlines()[-1] for cell in row.find_elements(By.CSS_SELECTOR, "td.attention")],
        })
    return {
        "rows": rows,
        "statuses": statuses,
        "status": driver.find_element(By.ID, "watch-status").text,
        "page_text": driver.find_element(By.TAG_NAME, "body").text,
    }


def watch_then_leave(driver, url: str, source: str, questions: list[str], every: float) -> str:
    """Start watching `source` in the stream tab, wait until a chunk is in, then leave the page; returns the status
    it showed last."""
    from selenium.webdriver.common.by import By

    _start_watching(driver, url, source, questions, every)
    watching = "//*[@id='watch-status'][contains(., 'chunk(s) of') and not(contains(., ': 0 chunk(s)'))]"
    _wait(driver, lambda d: d.find_elements(By.XPATH, watching), ANSWER_TIMEOUT, "a chunk of the stream")
    status = driver.find_element(By.ID, "watch-status").text
    driver.get("about:blank")
    return status


def _start_watching(driver, url: str, source: str, questions: list[str], every: float) -> None:
    from selenium.webdriver.common.by import By

    driver.get(url)
    tab = "//button[@role='tab' and contains(., 'Watch a stream')]"
    _wait(driver, lambda d: d.find_elements(By.XPATH, tab), 60, "the stream tab")
    driver.find_element(By.XPATH, tab).click()
    _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#source textarea, #source input"), 30, "the tab")
    driver.find_element(By.CSS_SELECTOR, "#source textarea, #source input").send_keys(source)
    every_box = driver.find_element(By.CSS_SELECTOR, "#every input")
    every_box.clear()
    every_box.send_keys(str(every))
    driver.find_element(By.CSS_SELECTOR, "#watch-questions textarea").send_keys("\n".join(questions))
    driver.find_element(By.ID, "start-watch").click()


def answer_sample_in_page(driver, url: str) -> dict:
    """Open the app, press "Load the sample clip" then "Answer"; returns the questions shown and the answers."""
    from selenium.webdriver.common.by import By

    driver.get(url)
    _wait(driver, lambda d: d.find_elements(By.ID, "sample"), 60, "the sample button")
    driver.find_element(By.ID, "sample").click()
    _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#video video[src*='file=']")
          and d.find_element(By.CSS_SELECTOR, "#questions textarea").get_attribute("value"), 60, "the sample clip")
    questions = driver.find_element(By.CSS_SELECTOR, "#questions textarea").get_attribute("value").splitlines()
    return {"questions": questions, "answers": _press_answer(driver, len(questions))}


def main():
    import argparse

    from mirasol_hf import DEFAULT_MODEL
    from mirasol_hf.app import write_sample_clip

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("screenshot", help="PNG to write")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        video, questions, truth = write_sample_clip(folder)
        with AppServer(args.model, folder) as app, open_browser(folder) as driver:
            app.wait()
            page = ask_in_page(driver, app.url, video, questions, screenshot=args.screenshot)
    for question, answer, expected in zip(questions, page["answers"], truth):
        print(f"{question} -> {answer!r} (true: {expected!r})")
    print(f"wrote {args.screenshot}")


if __name__ == "__main__":
    main()
