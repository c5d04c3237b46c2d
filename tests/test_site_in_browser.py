"""The rendered site and the slide decks, opened in a real headless Chromium (Debian's package; `make browser`)."""
import shutil

import nbformat
import pytest

from course import classroom

CHROME_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1280,800"]


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.skip("Debian's chromium and chromium-driver are not installed: `make browser` (as root) installs them")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROME_FLAGS:
        options.add_argument(flag)
    d = webdriver.Chrome(options=options, service=Service(driver))
    yield d
    d.quit()


def rendered_images(browser) -> int:
    """Images decoded with a non-zero size, once every image has finished loading (or failed), 10 s at most."""
    return browser.execute_async_script("""
        const done = arguments[arguments.length - 1];
        const t0 = Date.now();
        (function poll() {
          const imgs = Array.from(document.images);
          if ((document.readyState === 'complete' && imgs.every(i => i.complete)) || Date.now() - t0 > 10000)
            done(imgs.filter(i => i.complete && i.naturalWidth > 0).length);
          else setTimeout(poll, 50);
        })();""")


def stored_figures(path) -> int:
    nb = nbformat.read(path, as_version=4)
    return sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    classroom.build_site(out, classroom.infos())
    return out


def test_index_page_links_every_notebook_and_shows_the_map(browser, site):
    browser.get((site / "index.html").as_uri())
    links = browser.execute_script("return Array.from(document.querySelectorAll('li a')).map(a => a.href)")
    assert [link.rsplit("/", 1)[-1] for link in links] == [p.with_suffix(".html").name for p in classroom.notebook_paths()]
    assert rendered_images(browser) == 1  # the course map


@pytest.mark.parametrize("path", classroom.notebook_paths(), ids=lambda p: p.name)
def test_each_notebook_page_renders_all_its_figures(browser, site, path):
    browser.get((site / path.with_suffix(".html").name).as_uri())
    expected = stored_figures(path)
    assert expected > 0 and rendered_images(browser) == expected


def test_slide_decks_start_offline(browser, tmp_path):
    decks = classroom.build_slides(tmp_path, classroom.infos())
    for deck in decks:
        browser.get(deck.as_uri())
        ready = browser.execute_script(
            "return new Promise(r => { let n = 0; const t = setInterval(() => { const e = document.querySelector('.reveal');"
            " if ((e && e.classList.contains('ready')) || ++n > 50) { clearInterval(t); r(e && e.classList.contains('ready')); } }, 100); })")
        assert ready, f"reveal.js did not start in {deck.name}"
        assert browser.execute_script("return document.querySelectorAll('.slides > section').length") > 3
