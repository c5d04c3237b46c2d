"""The rendered site and the slide decks, opened in a real headless Chromium (Debian's package; `make browser`).

Both must work offline: every request a page makes is read from Chromium's performance log (the DevTools
``Network.requestWillBeSent`` events) and any to a host other than this machine fails the test; the built HTML is
also scanned for scripts, style sheets, images and module imports with an http(s) address."""
import json
import re
import shutil
from pathlib import Path
from urllib.parse import urlsplit

import nbformat
import pytest

from tools import classroom

pytestmark = pytest.mark.slow  # builds the site and the decks, starts a browser

CHROME_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1280,800"]
LOCAL_SCHEMES = {"file", "data", "blob", "about", "chrome", "devtools"}
LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1"}


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
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    d = webdriver.Chrome(options=options, service=Service(driver))
    yield d
    d.quit()


def requested_urls(browser) -> list[str]:
    """Every URL the browser asked for since the last call (the performance log is emptied on reading)."""
    urls = []
    for entry in browser.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
        elif message["method"] == "Network.webSocketCreated":
            urls.append(message["params"]["url"])
    return urls


def is_external(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme not in LOCAL_SCHEMES and parts.hostname not in LOCAL_HOSTS


def visit(browser, path: Path) -> None:
    requested_urls(browser), browser.get_log("browser")  # forget what earlier pages asked for and logged
    browser.get(path.as_uri())


def assert_offline(browser, path: Path) -> None:
    """Nothing the page asked for since `visit` left the machine, and the files it asked for exist."""
    urls = requested_urls(browser)
    external = [u for u in urls if is_external(u)]
    assert not external, f"{path.name} requested from the internet: {external}"
    missing = [u for u in urls if urlsplit(u).scheme == "file" and not Path(urlsplit(u).path).exists()]
    assert not missing, f"{path.name} asked for files that are not there: {missing}"


# <script src=...>, <link href=...>, <img src=...>, ... and `import ... from "https://..."` / `import("https://...")`
EXTERNAL_IN_HTML = re.compile(
    r"<(?:script|link|img|iframe|source|video|audio|embed)\b[^>]*?\b(?:src|href)\s*=\s*[\"']?(?:https?:)?//"
    r"|\bimport\b[^;\n]{0,80}?[\"'](?:https?:)?//", re.I)


def external_references(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    return [text[m.start():m.end() + 60] for m in EXTERNAL_IN_HTML.finditer(text)]


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


def typeset_math(browser) -> dict:
    """Once MathJax has typeset the page (20 s at most): how many formulas it rendered, how many it rendered as
    errors, and the markdown text that still looks like TeX (a ``$`` before a backslash command), with code and
    rendered formulas left out."""
    return browser.execute_async_script("""
        const done = arguments[arguments.length - 1];
        const t0 = Date.now();
        (function poll() {
          const mj = window.MathJax;
          if (!(mj && mj.startup && mj.startup.promise)) {
            if (Date.now() - t0 > 20000) done({loaded: false, formulas: 0, errors: 0, raw: []});
            else setTimeout(poll, 50);
            return;
          }
          mj.startup.promise.then(() => {
            const raw = [];
            for (const md of document.querySelectorAll('.jp-MarkdownOutput')) {
              const copy = md.cloneNode(true);
              copy.querySelectorAll('mjx-container, code, pre').forEach(e => e.remove());
              const found = copy.textContent.match(/\\$[^$]{0,80}?\\\\[A-Za-z]+/g);
              if (found) raw.push(...found);
            }
            done({loaded: true, formulas: document.querySelectorAll('mjx-container').length,
                  errors: document.querySelectorAll('mjx-merror, [data-mjx-error]').length, raw: raw});
          });
        })();""")


def stored_figures(path) -> int:
    nb = nbformat.read(path, as_version=4)
    return sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)


def has_math(path) -> bool:
    """Markdown with TeX in dollars: ``$\\alpha$``, ``$$ ... $$``."""
    nb = nbformat.read(path, as_version=4)
    return any(re.search(r"\$[^$]*\\[A-Za-z]", c.source) for c in nb.cells if c.cell_type == "markdown")


MATH_NOTEBOOKS = [p for p in classroom.notebook_paths() if has_math(p)]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    classroom.build_site(out, classroom.infos())
    return out


@pytest.fixture(scope="module")
def decks(tmp_path_factory):
    return classroom.build_slides(tmp_path_factory.mktemp("slides"), classroom.infos())


def test_the_site_and_the_decks_reference_nothing_on_the_internet(site, decks):
    pages = sorted(site.glob("*.html"))
    assert len(pages) == len(classroom.notebook_paths()) + 1 and len(decks) == len(classroom.notebook_paths())
    found = {p.name: refs for p in [*pages, *decks] if (refs := external_references(p))}
    assert not found, f"pages that load from the internet: {found}"


def test_index_page_links_every_notebook_and_shows_the_map(browser, site):
    visit(browser, site / "index.html")
    links = browser.execute_script("return Array.from(document.querySelectorAll('li a')).map(a => a.href)")
    assert [link.rsplit("/", 1)[-1] for link in links] == [p.with_suffix(".html").name for p in classroom.notebook_paths()]
    assert rendered_images(browser) == 1  # the course map
    assert_offline(browser, site / "index.html")


@pytest.mark.parametrize("path", classroom.notebook_paths(), ids=lambda p: p.name)
def test_each_notebook_page_renders_its_figures_offline_and_links_its_neighbours(browser, site, path):
    page = site / path.with_suffix(".html").name
    visit(browser, page)
    expected = stored_figures(path)
    assert expected > 0 and rendered_images(browser) == expected
    typeset_math(browser)  # let MathJax finish (and make any request it would) before the requests are read
    assert_offline(browser, page)
    names = [p.with_suffix(".html").name for p in classroom.notebook_paths()]
    k = names.index(page.name)
    nav = browser.execute_script("""
        const bar = document.querySelector('nav.course-nav');
        const href = rel => { const a = bar && bar.querySelector(`a[rel="${rel}"]`); return a ? a.href : null; };
        return {bars: document.querySelectorAll('nav.course-nav').length,
                index: href('index'), prev: href('prev'), next: href('next')};""")
    assert nav["bars"] == 2  # above and below the notebook
    assert nav["index"] == (site / "index.html").as_uri()
    assert nav["prev"] == ((site / names[k - 1]).as_uri() if k > 0 else None)
    assert nav["next"] == ((site / names[k + 1]).as_uri() if k + 1 < len(names) else None)
    for link in filter(None, (nav["index"], nav["prev"], nav["next"])):
        assert Path(urlsplit(link).path).is_file(), link


def test_the_navigation_bar_walks_the_course_and_back_to_the_index(browser, site):
    from selenium.webdriver.common.by import By

    names = [p.with_suffix(".html").name for p in classroom.notebook_paths()]
    visit(browser, site / names[0])
    browser.find_element(By.CSS_SELECTOR, "nav.course-nav a[rel=next]").click()
    assert browser.current_url == (site / names[1]).as_uri()
    browser.find_element(By.CSS_SELECTOR, "nav.course-nav a[rel=prev]").click()
    assert browser.current_url == (site / names[0]).as_uri()
    browser.find_element(By.CSS_SELECTOR, "nav.course-nav a[rel=index]").click()
    assert browser.current_url == (site / "index.html").as_uri()
    assert_offline(browser, site / names[0])


def test_some_notebook_has_math_to_render():
    assert MATH_NOTEBOOKS, "no notebook's markdown has TeX: the math tests below test nothing"


@pytest.mark.parametrize("path", MATH_NOTEBOOKS, ids=lambda p: p.name)
def test_math_is_typeset_offline(browser, site, path):
    page = site / path.with_suffix(".html").name
    visit(browser, page)
    math = typeset_math(browser)
    assert math["loaded"], f"MathJax did not load in {page.name}"
    assert math["formulas"] > 0 and math["errors"] == 0, math
    assert not math["raw"], f"TeX left as text in {page.name}: {math['raw'][:5]}"
    assert_offline(browser, page)


def test_slide_decks_start_offline(browser, decks):
    for deck in decks:
        visit(browser, deck)
        ready = browser.execute_script(
            "return new Promise(r => { let n = 0; const t = setInterval(() => { const e = document.querySelector('.reveal');"
            " if ((e && e.classList.contains('ready')) || ++n > 50) { clearInterval(t); r(e && e.classList.contains('ready')); } }, 100); })")
        assert ready, f"reveal.js did not start in {deck.name}"
        assert browser.execute_script("return document.querySelectorAll('.slides > section').length") > 3
        if any(deck.name.startswith(p.stem) for p in MATH_NOTEBOOKS):
            math = typeset_math(browser)
            assert math["loaded"] and math["formulas"] > 0 and math["errors"] == 0, (deck.name, math)
            assert not math["raw"], f"TeX left as text in {deck.name}: {math['raw'][:5]}"
        else:
            typeset_math(browser)
        errors = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, f"{deck.name}: {errors}"
        assert_offline(browser, deck)
