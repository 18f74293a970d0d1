"""The web demo in a real browser: the distribution's headless Chromium, driven by Selenium.

Used by the browser test (``tests/test_app.py``) and by ``make screenshot``, which saves the README's picture:
``python -m refusion_pl.app_browser CKPT IMAGE OUT.png``. Selenium is given the system ``chromedriver``, so its
driver manager downloads nothing; ``.ci/run`` installs ``chromium`` and ``chromium-driver`` when missing.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import shutil
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
LOADED_IMAGES = (  # sizes of the pictures the browser has decoded (a broken or pending one has no size)
    "return [...document.querySelectorAll(arguments[0])]"
    ".filter(i => i.complete && i.naturalWidth > 0).map(i => [i.naturalWidth, i.naturalHeight]);"
)
DOWNLOADS = "return [...document.querySelectorAll(arguments[0])].map(a => a.getAttribute('download'));"
WINDOW = (1280, 1000)


class BrowserError(RuntimeError):
    """No usable browser or driver, or the page did not reach the expected state; the message says which."""


def find_browser() -> tuple[str, str] | None:
    """(browser, chromedriver) paths from the system, or None when either is missing."""
    browser = next((found for name in BROWSERS if (found := shutil.which(name))), None)
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def chromium(width: int = WINDOW[0], height: int = WINDOW[1]) -> Any:
    """A headless Chromium session from the system's binaries (nothing is downloaded)."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        raise BrowserError("the browser test needs selenium: pip install -e '.[dev]'") from None
    found = find_browser()
    if found is None:
        raise BrowserError("no chromium and chromedriver on PATH: apt-get install chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = found[0]
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    options.add_argument(f"--window-size={width},{height}")
    return webdriver.Chrome(options=options, service=Service(executable_path=found[1]))


@dataclasses.dataclass
class PageResult:
    """What the page showed after a restoration."""

    status: str  # the status text under the result
    images: list[tuple[int, int]]  # (width, height) of each loaded picture in the before/after comparison
    downloads: list[str]  # file names offered for download
    errors: list[str]  # texts of error toasts or error boxes (empty when all went well)
    queue_texts: list[str]  # status-tracker texts seen while waiting (``queue: 2/2`` while queued)
    seconds: float


def _texts(driver: Any, selector: str) -> list[str]:
    """Visible texts of the elements matching ``selector``, read in one script (the page re-renders meanwhile)."""
    script = (
        "return [...document.querySelectorAll(arguments[0])].map(e => e.innerText.trim()).filter(t => t);"
    )
    return list(driver.execute_script(script, selector))


def _text(driver: Any, selector: str) -> str:
    return " ".join(_texts(driver, selector))


def page_errors(driver: Any) -> list[str]:
    """Texts of Gradio's error toasts and error-status boxes on the page."""
    return sorted(set(_texts(driver, ".toast-body.error, .error")))


def restore_in_browser(
    driver: Any,
    url: str,
    image: Path,
    timeout: float = 60.0,
    before_click: Callable[[], None] | None = None,
    on_poll: Callable[[list[str]], None] | None = None,
) -> PageResult:
    """Open the page, upload ``image``, press Restore and wait for the result (or an error).

    ``before_click`` runs just before the button is pressed and ``on_poll`` with the status-tracker texts seen
    so far at every poll while waiting (the queue test occupies the worker, then frees it once queued).
    """
    from selenium.webdriver.common.by import By

    driver.get(url)
    wait_for(driver, lambda: driver.find_elements(By.CSS_SELECTOR, "#uploads input[type=file]"), 30, "upload")
    driver.find_element(By.CSS_SELECTOR, "#uploads input[type=file]").send_keys(str(image.resolve()))
    listed = lambda: image.stem in _text(driver, "#uploads") and image.suffix in _text(driver, "#uploads")  # noqa: E731
    wait_for(driver, listed, 30, f"{image.name} listed as uploaded")
    if before_click is not None:
        before_click()
    start = time.perf_counter()
    driver.find_element(By.CSS_SELECTOR, "#restore").click()
    queue_texts: list[str] = []

    def finished() -> bool:
        progress = _text(driver, "#comparison .progress-text, #comparison .meta-text, #status .meta-text")
        progress = re.sub(r"(\s*\|\s*[\d./]+s?)+$|^[\d./]+s$", "", progress)  # drop the clock and estimate
        if progress and (not queue_texts or queue_texts[-1] != progress):
            queue_texts.append(progress)
        if on_poll is not None:
            on_poll(queue_texts)
        if page_errors(driver):
            return True
        shown = len(driver.execute_script(LOADED_IMAGES, "#comparison img")) >= 2  # before and after decoded
        return shown and _text(driver, "#status").startswith("Restored")

    wait_for(driver, finished, timeout, "the result or an error", poll=0.05)
    seconds = time.perf_counter() - start
    return PageResult(
        status=_text(driver, "#status"),
        images=[tuple(size) for size in driver.execute_script(LOADED_IMAGES, "#comparison img")],
        downloads=list(driver.execute_script(DOWNLOADS, "#downloads a[download]")),
        errors=page_errors(driver),
        queue_texts=queue_texts,
        seconds=seconds,
    )


def wait_for(driver: Any, condition: Any, timeout: float, what: str, poll: float = 0.1) -> Any:
    """Poll ``condition`` until truthy; on timeout fail naming ``what`` and the page's visible text."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll)
    body = _text(driver, "body")[:2000]
    raise BrowserError(f"timed out after {timeout:.0f} s waiting for {what}; the page shows:\n{body}")


def save_screenshot(driver: Any, out: Path, width: int = 1100) -> Path:
    """The page as a PNG at most ``width`` pixels wide (README-sized), written atomically."""
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial.png")
    driver.execute_script("window.scrollTo(0, 0);")  # pressing Restore scrolled the page
    time.sleep(0.2)
    driver.save_screenshot(str(partial))
    with Image.open(partial) as shot:
        picture = shot.convert("RGB")
    if picture.width > width:
        picture = picture.resize((width, round(picture.height * width / picture.width)), Image.LANCZOS)
    # 256 colours: a README-sized file (~170 KB instead of ~370 KB), text stays sharp
    picture.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
        partial, optimize=True
    )
    partial.replace(out)
    return out


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main(argv: list[str] | None = None) -> int:
    """Serve CKPT on a free loopback port, restore IMAGE in headless Chromium, save the page to OUT."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ckpt", type=Path)
    parser.add_argument("image", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("overrides", nargs="*", help="app settings, e.g. sample_steps=10 device=cpu")
    args = parser.parse_args(argv)
    from hydra import compose, initialize_config_dir

    from refusion_pl.app import serve
    from refusion_pl.config import CONFIG_DIR

    if not args.image.is_file():
        print(f"error: image {args.image} does not exist", file=sys.stderr)
        return 2
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("app", overrides=[f"ckpt={args.ckpt}", f"port={free_port()}", *args.overrides])
    demo = serve(cfg, block=False)
    driver = chromium()
    try:
        result = restore_in_browser(driver, f"http://127.0.0.1:{cfg.port}/", args.image, timeout=1800)
        if result.errors or not result.status.startswith("Restored"):
            print(f"error: the page shows {result.errors or result.status!r}", file=sys.stderr)
            return 1
        time.sleep(0.5)  # let the comparison slider finish drawing
        print(f"{save_screenshot(driver, args.out)}: {result.status}")
        return 0
    finally:
        driver.quit()
        demo.close()
        shutil.rmtree(demo.refusion_service.workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
