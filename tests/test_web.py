"""The web page at ``GET /`` in real headless Chromium (Debian's, driven by Playwright).

One ``edgeocr serve`` subprocess with an empty results directory serves the whole module. The
first test uploads the receipt (the only real OCR here, a few seconds once the engine has
loaded); every later test picks the same file and gets the stored result by its hash, so the
file stays fast. Tests run in file order; only the first one relies on that.

Chromium comes from Debian (``make chromium``, run by ``make test``); never ``playwright
install``. Screenshots land in ``artifacts/`` (gitignored) for a human to look at.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, Request, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from servers import edgeocr_serve

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
FIRST_OCR_MS = 120_000  # engine load + OCR on 2 shared cores, with other jobs running
RECEIPT = "images/receipts_sroie/X51006329399.jpg"


# ---- fixtures ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``edgeocr serve`` on a free loopback port with its own empty results directory."""
    tmp = tmp_path_factory.mktemp("web")
    with edgeocr_serve(tmp / "results", tmp / "serve.log") as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: run `make chromium` (scripts/ensure_deb.sh)")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@contextmanager
def _new_page(browser: Browser, server: str, **context_args) -> Iterator[Page]:
    """A fresh browser context on the page; fails if the page threw an uncaught error."""
    context = browser.new_context(**context_args)
    context.set_default_timeout(30_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))  # uncaught JS exceptions
    page.goto(server)
    try:
        yield page
    finally:
        context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


@pytest.fixture
def page(browser: Browser, server: str) -> Iterator[Page]:
    with _new_page(browser, server, viewport={"width": 1280, "height": 900}) as p:
        yield p


@pytest.fixture
def phone(browser: Browser, server: str) -> Iterator[Page]:
    with _new_page(browser, server, viewport={"width": 390, "height": 844},
                   device_scale_factor=2, is_mobile=True, has_touch=True) as p:
        yield p


@pytest.fixture(scope="module")
def receipt(eval_dir: Path) -> Path:
    return eval_dir / RECEIPT


# ---- helpers -------------------------------------------------------------------------------

def wait_done(page: Page, timeout: float = 30_000) -> None:
    page.wait_for_selector("body[data-state=done]", timeout=timeout)


def pick(page: Page, path: Path, timeout: float = 30_000) -> None:
    page.set_input_files("#file", str(path))
    wait_done(page, timeout)


def is_post(req: Request) -> bool:
    return req.method == "POST" and req.url.rstrip("/").endswith("/ocr")


def highlighted(page: Page, selector: str) -> bool:
    return "highlight" in (page.get_attribute(selector, "class") or "").split()


# ---- tests ---------------------------------------------------------------------------------

def test_upload_draws_a_box_per_line(page: Page, receipt: Path, server: str) -> None:
    # First test of the module: the store is empty, so this is a real upload and OCR.
    page.evaluate("""() => {  // every state the page passes through, however briefly
        window.states = [];
        new MutationObserver(() => window.states.push(document.body.dataset.state))
            .observe(document.body, { attributes: true, attributeFilter: ["data-state"] });
    }""")
    with page.expect_response(lambda r: is_post(r.request), timeout=FIRST_OCR_MS) as answer:
        page.set_input_files("#file", str(receipt))
    assert answer.value.status == 200
    assert answer.value.headers["x-edgeocr-cache"] == "miss"
    wait_done(page)
    # The API's JSON for this image. (Chromium does not keep the body of a POST answered to
    # an XHR that sent a file for Playwright to read, so ask the API again.)
    digest = hashlib.sha256(receipt.read_bytes()).hexdigest()
    api = page.request.get(f"{server}/ocr/{digest}").json()

    assert api["hash"] == digest
    text = page.inner_text("#lines")
    for words in ("TAX INVOICE", "TOTAL"):
        assert words in text

    boxes = page.locator("#overlay polygon")
    rows = page.locator("#lines li[data-line]")
    assert boxes.count() == rows.count() == len(api["lines"]) > 10
    assert page.locator("#lines li .text").all_inner_texts() == [
        line["text"] for line in api["lines"]]
    first_box = " ".join(f"{x},{y}" for x, y in api["lines"][0]["box"])
    assert boxes.first.get_attribute("points") == first_box
    w, h = api["image"]["width"], api["image"]["height"]
    assert page.get_attribute("#overlay", "viewBox") == f"0 0 {w} {h}"

    # The overlay is drawn exactly over the shown image, whatever size that is.
    img, svg = page.locator("#image").bounding_box(), page.locator("#overlay").bounding_box()
    assert img and svg and abs(img["width"] - svg["width"]) < 1
    assert abs(img["height"] - svg["height"]) < 1
    assert abs(img["width"] / img["height"] - w / h) < 0.01

    assert page.evaluate("window.states") == ["hashing", "uploading", "recognising", "done"]
    assert "cached: false" in page.inner_text("#meta")
    assert page.get_attribute("#result-link", "href") == api["result_url"]
    stored = page.request.get(api["result_url"])
    assert stored.ok and stored.json()["hash"] == api["hash"]

    with page.expect_download() as download:
        page.click("#download")
    saved = json.loads(Path(download.value.path()).read_text())
    assert saved["hash"] == api["hash"] and len(saved["lines"]) == len(api["lines"])

    ARTIFACTS.mkdir(exist_ok=True)
    page.hover("#lines li:has-text('TAX INVOICE')")
    page.screenshot(path=str(ARTIFACTS / "web-result.png"), full_page=True)


def test_copy_text_and_link(browser: Browser, server: str, receipt: Path) -> None:
    with _new_page(browser, server, permissions=["clipboard-read", "clipboard-write"]) as page:
        pick(page, receipt, timeout=FIRST_OCR_MS)
        page.click("#copy-text")
        page.wait_for_selector("#status:has-text('Text copied')")
        lines = page.locator("#lines li .text").all_inner_texts()
        assert page.evaluate("navigator.clipboard.readText()") == "\n".join(lines)
        page.click("#copy-link")
        page.wait_for_selector("#status:has-text('Link copied')")
        assert page.evaluate("navigator.clipboard.readText()") == page.get_attribute(
            "#result-link", "href")


def test_repeat_is_looked_up_by_hash_not_uploaded(page: Page, receipt: Path) -> None:
    pick(page, receipt, timeout=FIRST_OCR_MS)  # stored by now, whichever way it got there
    page.reload()
    requests: list[Request] = []
    page.on("request", lambda r: requests.append(r))  # a lambda: Playwright can't wrap builtins

    pick(page, receipt)

    digest = hashlib.sha256(receipt.read_bytes()).hexdigest()
    assert not [r for r in requests if is_post(r)], "a repeat must not upload"
    assert any(r.method == "GET" and r.url.endswith(f"/ocr/{digest}") for r in requests)
    assert "cached: true" in page.inner_text("#meta")
    assert page.locator("#overlay polygon").count() == page.locator("#lines li[data-line]").count()
    assert "TOTAL" in page.inner_text("#lines")


def test_not_an_image_shows_a_clear_message(page: Page, receipt: Path, tmp_path: Path) -> None:
    fake = tmp_path / "notes.png"
    fake.write_text("these are notes, not a picture\n")
    page.set_input_files("#file", str(fake))
    page.wait_for_selector("body[data-state=error]")

    assert page.is_visible("#error")
    assert page.get_attribute("#error", "data-code") == "unsupported_format"
    assert "not an image we can read" in page.inner_text("#error-title")
    assert page.is_hidden("#result")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "web-error.png"))

    pick(page, receipt, timeout=FIRST_OCR_MS)  # the page recovers on the next image
    assert page.is_hidden("#error")


def _api_error(code: str) -> str:
    return json.dumps({"error": {"code": code, "message": f"server says {code}"}})


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (413, _api_error("too_many_pixels"), "too many pixels"),
        (503, _api_error("store_unavailable"), "storage is unavailable"),
        (502, "<h1>Bad Gateway</h1>", "The service had a problem (HTTP 502)"),
        (None, None, "Could not reach the service"),
    ],
    ids=["413", "503", "502-not-json", "network"],
)
def test_upload_failures_are_explained(page: Page, tmp_path: Path, status, body, message) -> None:
    # The hash lookup misses (unknown bytes), then the POST meets the faked failure.
    def fail(route):
        if route.request.method != "POST":
            route.fallback()
        elif status is None:
            route.abort("connectionreset")
        else:
            route.fulfill(status=status, body=body)

    page.route("**/ocr", fail)
    image = tmp_path / "pic.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(64))
    page.set_input_files("#file", str(image))
    page.wait_for_selector("body[data-state=error]")
    assert message in page.inner_text("#error")


def test_hover_and_focus_link_lines_and_boxes(page: Page, receipt: Path) -> None:
    pick(page, receipt, timeout=FIRST_OCR_MS)
    row, box = "#lines li[data-line='6']", "#overlay polygon[data-line='6']"

    page.hover(row)
    assert highlighted(page, box) and highlighted(page, row)
    page.mouse.move(1, 1)
    assert not highlighted(page, box)

    page.hover("#overlay polygon[data-line='3']")
    assert highlighted(page, "#lines li[data-line='3']")
    page.mouse.move(1, 1)
    assert not highlighted(page, "#lines li[data-line='3']")

    # Keyboard: the list is one Tab stop (roving tabindex); arrows move between lines.
    page.focus("body")
    for _ in range(20):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.matches('#lines li')"):
            break
    assert page.evaluate("document.activeElement.dataset.line") == "0"
    assert highlighted(page, "#overlay polygon[data-line='0']")
    page.keyboard.press("ArrowDown")
    assert page.evaluate("document.activeElement.dataset.line") == "1"
    assert highlighted(page, "#overlay polygon[data-line='1']")
    assert not highlighted(page, "#overlay polygon[data-line='0']")


def test_drop_zone_works_from_the_keyboard(page: Page, receipt: Path) -> None:
    page.focus("body")
    page.keyboard.press("Tab")  # the skip link
    page.keyboard.press("Tab")  # the file input inside the drop zone
    assert page.evaluate("document.activeElement.id") == "file"
    outline = page.eval_on_selector("#dropzone", "z => getComputedStyle(z).outlineStyle")
    assert outline == "solid", "the focused drop zone must show a focus ring"
    # On a loaded machine Chromium sometimes drops the first activation of a file input;
    # a person would press again, and so does the test (at most three times).
    for attempt in range(3):
        try:
            with page.expect_file_chooser(timeout=15_000) as chooser:
                page.keyboard.press("Enter")
            break
        except PlaywrightTimeoutError:
            if attempt == 2:
                raise
            page.focus("#file")
    chooser.value.set_files(str(receipt))
    wait_done(page, FIRST_OCR_MS)


@pytest.mark.parametrize("how", ["drop", "paste"])
def test_drop_and_paste(page: Page, receipt: Path, how: str) -> None:
    data = base64.b64encode(receipt.read_bytes()).decode()
    page.evaluate(
        """([how, b64, name]) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const dt = new DataTransfer();
            dt.items.add(new File([bytes], name, { type: "image/jpeg" }));
            const event = how === "drop"
              ? new DragEvent("drop", { dataTransfer: dt, bubbles: true, cancelable: true })
              : new ClipboardEvent("paste", { clipboardData: dt, bubbles: true, cancelable: true });
            document.getElementById(how === "drop" ? "dropzone" : "main").dispatchEvent(event);
        }""",
        [how, data, receipt.name],
    )
    wait_done(page, FIRST_OCR_MS)
    assert "TOTAL" in page.inner_text("#lines")


def test_hmac_mode_skips_the_hash_lookup(page: Page, receipt: Path, server: str) -> None:
    # With OCR_HASH_SECRET the key is an HMAC the browser cannot compute: upload straight away.
    stored = page.request.get(f"{server}/ocr/{hashlib.sha256(receipt.read_bytes()).hexdigest()}")
    if not stored.ok:  # run on its own: store the receipt first
        pick(page, receipt, timeout=FIRST_OCR_MS)
        stored = page.request.get(stored.url)
    page.route("**/healthz", lambda route: route.fulfill(
        json={"status": "ok", "pipeline": "x", "models_loaded": True, "hmac": True}))
    page.route("**/ocr", lambda route: route.fulfill(json={**stored.json(), "cached": True}))
    requests: list[Request] = []
    page.on("request", lambda r: requests.append(r))  # a lambda: Playwright can't wrap builtins
    page.reload()

    pick(page, receipt)

    assert [r for r in requests if is_post(r)], "HMAC mode must upload"
    assert not [r for r in requests if "/ocr/" in r.url], "HMAC mode must not look up by hash"


def test_phone_width_stacks_without_horizontal_scroll(phone: Page, receipt: Path) -> None:
    pick(phone, receipt, timeout=FIRST_OCR_MS)
    overflow = phone.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, f"{overflow}px of horizontal scroll at phone width"
    stage, lines = phone.locator("#stage").bounding_box(), phone.locator("#lines").bounding_box()
    assert stage and lines and stage["y"] + stage["height"] <= lines["y"], "image above text"
    ARTIFACTS.mkdir(exist_ok=True)
    phone.screenshot(path=str(ARTIFACTS / "web-phone.png"))
