"""The built website, tested in a real browser the way a reader meets it.

The site is built once per session into a temporary folder (or taken from
``KDBOOK_SITE_HTML``, a built ``_build/html`` of this checkout, as CI does after its
build stage), served over HTTP on 127.0.0.1, and every HTML page is loaded in headless
Chromium (Debian's ``chromium``), driven through the Chrome DevTools Protocol with
``websocket-client``. For every page the tests assert: no console errors (including
failed loads and uncaught exceptions), every image loaded, MathJax rendered every
equation with no error node, every internal link resolves (file and anchor), and on
notebook pages the Colab button points at that notebook in the repository configured in
``_config.yml``. Screenshots of the intro, the first chapter and (once it exists) the
first experiment page go to ``test-artifacts/``.

Without Chromium the tests are skipped, except under CI (``CI`` set), where
``.ci/run`` installs it and its absence is a failure.
"""

from __future__ import annotations

import base64
import functools
import http.server
import json
import os
import re
import shutil
import socketserver
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

from colab import read_repository  # tools/colab.py (tests/conftest.py puts tools/ on sys.path)

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = os.environ.get("KDBOOK_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
PAGE_TIMEOUT_S = 20
QUOTES = ("'", '"', "‘", "“", "&#8216;", "&#8220;", "&#39;", "&quot;")  # as text or entity

if not Path(CHROMIUM).exists():
    if os.environ.get("CI"):
        raise RuntimeError(f"CI needs Chromium for the site tests, and {CHROMIUM} is missing "
                           "(.ci/run installs Debian's chromium package)")
    pytest.skip(f"Chromium not found at {CHROMIUM} (install Debian's `chromium` package or set "
                "KDBOOK_CHROMIUM); the browser tests of the website are skipped",
                allow_module_level=True)

websocket = pytest.importorskip("websocket", reason="websocket-client is in requirements.txt")


# ---------------------------------------------------------------- site and server

def build_site(out: Path) -> Path:
    """Builds the book into ``out`` (the repository's _build is left alone); returns html/."""
    command = [sys.executable, "-c", "from jupyter_book.cli.main import main; main()",
               "build", str(ROOT), "--path-output", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    html = out / "_build" / "html"
    if result.returncode != 0 or not (html / "index.html").exists():
        raise RuntimeError(f"jupyter-book build failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return html


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="session")
def site_html(tmp_path_factory) -> Path:
    prebuilt = os.environ.get("KDBOOK_SITE_HTML")
    if prebuilt:
        html = Path(prebuilt)
        assert (html / "index.html").exists(), f"KDBOOK_SITE_HTML={prebuilt} has no index.html"
        return html
    return build_site(tmp_path_factory.mktemp("site"))


@pytest.fixture(scope="session")
def server(site_html):
    handler = functools.partial(_QuietHandler, directory=str(site_html))
    httpd = socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


# ---------------------------------------------------------------- a small CDP client

class Browser:
    """Headless Chromium with one page, driven over the DevTools protocol."""

    def __init__(self, profile_dir: Path):
        self.log = open(profile_dir.parent / "chromium.log", "wb")
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--disable-extensions", "--disable-default-apps", "--mute-audio",
             "--hide-scrollbars", "--window-size=1280,900", f"--user-data-dir={profile_dir}",
             "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=self.log, start_new_session=True)
        port_file = profile_dir / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().count("\n") >= 1):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"Chromium did not start; see {profile_dir.parent / 'chromium.log'}")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        targets = []
        while not targets and time.monotonic() < deadline:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as reply:
                targets = [t for t in json.load(reply) if t.get("type") == "page"]
            time.sleep(0.05)
        self.ws = websocket.create_connection(targets[0]["webSocketDebuggerUrl"], timeout=PAGE_TIMEOUT_S,
                                              suppress_origin=True)
        self.next_id = 0
        self.events: list[dict] = []
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable")
        self.call("Emulation.setDeviceMetricsOverride",
                  width=1280, height=900, deviceScaleFactor=1, mobile=False)

    def _receive(self, deadline: float) -> dict:
        self.ws.settimeout(max(0.05, deadline - time.monotonic()))
        return json.loads(self.ws.recv())

    def call(self, method: str, **params):
        self.next_id += 1
        my_id = self.next_id
        self.ws.send(json.dumps({"id": my_id, "method": method, "params": params}))
        deadline = time.monotonic() + PAGE_TIMEOUT_S
        while True:
            message = self._receive(deadline)
            if message.get("id") == my_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            if "method" in message:
                self.events.append(message)

    def wait_for(self, event: str, timeout: float = PAGE_TIMEOUT_S, count: int = 1) -> None:
        deadline = time.monotonic() + timeout
        while sum(e["method"] == event for e in self.events) < count:
            message = self._receive(deadline)
            if "method" in message:
                self.events.append(message)

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, awaitPromise=True,
                           returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def open(self, url: str, redirects: int = 0) -> None:
        """Loads ``url`` and waits for its load event (and those of ``redirects`` more pages)."""
        self.events.clear()
        self.call("Page.navigate", url=url)
        self.wait_for("Page.loadEventFired", count=1 + redirects)

    def console_errors(self) -> list[str]:
        errors = []
        for event in self.events:
            params = event.get("params", {})
            if event["method"] == "Runtime.exceptionThrown":
                details = params["exceptionDetails"]
                errors.append(f"uncaught: {details.get('exception', {}).get('description') or details.get('text')}")
            elif event["method"] == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                errors.append("console.error: " + " ".join(str(a.get("value", a.get("description", "")))
                                                           for a in params.get("args", [])))
            elif event["method"] == "Log.entryAdded" and params["entry"].get("level") == "error":
                entry = params["entry"]
                errors.append(f"{entry.get('source')}: {entry.get('text')} {entry.get('url', '')}".strip())
        return errors

    def screenshot(self, path: Path, scroll_to: str | None = None) -> None:
        if scroll_to:
            self.evaluate(f"document.querySelector({json.dumps(scroll_to)}).scrollIntoView()")
        else:
            self.evaluate("window.scrollTo(0, 0)")
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        try:
            if getattr(self, "ws", None):
                self.ws.close()
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, 15)
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(self.proc.pid, 9)
                    self.proc.wait(timeout=10)
            self.log.close()


# What the page reports about itself once loaded (MathJax finished, images settled).
PAGE_REPORT = r"""
(async () => {
  const images = Array.from(document.images);
  await Promise.all(images.map(img => {
    img.loading = 'eager';
    if (img.complete) return null;
    return new Promise(done => {
      img.addEventListener('load', done); img.addEventListener('error', done);
      setTimeout(done, 10000);
    });
  }));
  let mathjax = false;
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    mathjax = true;
    await MathJax.startup.promise;
  }
  const math = Array.from(document.querySelectorAll('.math'));
  return {
    mathjax,
    math: math.length,
    unrendered: math.filter(n => !n.querySelector('mjx-container')).map(n => n.textContent.slice(0, 80)),
    merrors: Array.from(document.querySelectorAll('mjx-merror'))
      .map(n => n.getAttribute('data-mjx-error') || n.textContent.slice(0, 80)),
    images: images.map(img => ({src: img.currentSrc || img.src, ok: img.complete && img.naturalWidth > 0})),
    links: Array.from(document.querySelectorAll('a[href]')).map(a => a.href),
    colab: Array.from(document.querySelectorAll('a[href*="colab.research.google.com"]')).map(a => a.href),
  };
})()
"""


def refresh_target(path: Path) -> str | None:
    """Where a ``<meta http-equiv="Refresh">`` page sends the reader (the root index.html)."""
    match = re.search(r'<meta\s+http-equiv="refresh"\s+content="\d+;\s*url=([^"]+)"',
                      path.read_text(encoding="utf-8", errors="replace"), re.IGNORECASE)
    return match.group(1) if match else None


def html_pages(html: Path) -> list[str]:
    """Every HTML page of the site, as paths relative to html/ (``_static`` excluded)."""
    return sorted(p.relative_to(html).as_posix() for p in html.rglob("*.html")
                  if not p.relative_to(html).parts[0].startswith("_"))


def experiment_page() -> str | None:
    """The first chapter of the toc's Experiments part, if there is one yet."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    for part in toc.get("parts", []):
        if part.get("caption", "").lower().startswith("experiment") and part.get("chapters"):
            return part["chapters"][0]["file"]
    return None


@pytest.fixture(scope="session")
def visited(site_html, server, tmp_path_factory):
    """Loads every page once; returns ``{page: report}`` with console errors included."""
    profile = tmp_path_factory.mktemp("chromium") / "profile"
    profile.mkdir()
    browser = Browser(profile)
    reports = {}
    shots = {"book/intro.html": [("intro.png", None)],
             "book/notation.html": [("notation.png", None)],
             "book/formulation.html": [("formulation.png", None),
                                       ("formulation-exercises.png", "#exercises")]}
    experiment = experiment_page()
    if experiment:
        shots.setdefault(f"{experiment}.html", []).append(("experiment.png", None))
    try:
        for page in html_pages(site_html):
            target = refresh_target(site_html / page)
            browser.open(f"{server}/{page}", redirects=1 if target else 0)
            report = browser.evaluate(PAGE_REPORT)
            report["location"] = browser.evaluate("location.href")
            if target:  # a redirect: what was checked is the page it leads to
                report["redirect"] = urllib.parse.urljoin(f"{server}/{page}", target)
            # MathJax and late scripts may log after the load event: give them a moment.
            browser.evaluate("new Promise(done => setTimeout(done, 100))")
            report["console"] = browser.console_errors()
            reports[page] = report
            for name, anchor in shots.get(page, []):
                browser.screenshot(ARTIFACTS / name, scroll_to=anchor)
    finally:
        browser.close()
    return reports


# ---------------------------------------------------------------- the tests

def _collate(failures: dict[str, list]) -> str:
    return "\n".join(f"{page}: {problem}" for page, problems in failures.items() for problem in problems)


def test_every_page_is_visited(site_html, server, visited):
    pages = html_pages(site_html)
    assert "index.html" in pages and "book/intro.html" in pages and "book/formulation.html" in pages
    assert set(visited) == set(pages)
    for page, r in visited.items():
        assert r["location"] == r.get("redirect", f"{server}/{page}"), page
    assert visited["index.html"]["redirect"] == f"{server}/book/intro.html"


def test_no_console_errors(visited):
    failures = {page: r["console"] for page, r in visited.items() if r["console"]}
    assert not failures, "console errors:\n" + _collate(failures)


def test_every_image_loads(visited):
    failures = {page: [i["src"] for i in r["images"] if not i["ok"]] for page, r in visited.items()}
    failures = {page: srcs for page, srcs in failures.items() if srcs}
    assert not failures, "images that did not load:\n" + _collate(failures)
    assert any(r["images"] for r in visited.values())


def test_mathjax_renders_every_equation(visited):
    failures = {}
    for page, r in visited.items():
        problems = [f"not rendered: {t!r}" for t in r["unrendered"]]
        problems += [f"MathJax error: {e!r}" for e in r["merrors"]]
        if r["math"] and not r["mathjax"]:
            problems.append(f"{r['math']} equations but MathJax is not loaded")
        if problems:
            failures[page] = problems
    assert not failures, "\n" + _collate(failures)
    # the chapters are full of math: make sure the check saw it
    assert visited["book/formulation.html"]["math"] > 50


class _Anchors(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("id", "name") and value:
                self.ids.add(value)


@functools.cache
def _anchors(path: Path) -> frozenset[str]:
    parser = _Anchors()
    parser.feed(path.read_text(encoding="utf-8", errors="replace"))
    return frozenset(parser.ids)


def test_every_internal_link_resolves(site_html, server, visited):
    failures: dict[str, list[str]] = {}
    checked = 0
    for page, r in visited.items():
        for href in sorted(set(r["links"])):
            url = urllib.parse.urlsplit(href)
            if f"{url.scheme}://{url.netloc}" != server:
                continue  # external (GitHub, Colab...): not reachable from here
            path = urllib.parse.unquote(url.path).lstrip("/")
            target = site_html / path
            if not path or path.endswith("/"):
                target = target / "index.html"
            checked += 1
            if not target.is_file():
                failures.setdefault(page, []).append(f"{href}: no file {target.relative_to(site_html)}")
            elif url.fragment and target.suffix == ".html" and \
                    urllib.parse.unquote(url.fragment) not in _anchors(target):
                failures.setdefault(page, []).append(f"{href}: no anchor #{url.fragment}")
    assert not failures, "broken internal links:\n" + _collate(failures)
    assert checked > 20


def test_colab_buttons_point_at_the_configured_repository(site_html, visited):
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    book_path = str(config.get("repository", {}).get("path_to_book") or "").strip("/")
    repository = read_repository(ROOT / "_config.yml")
    failures = {}
    notebooks = 0
    for page, r in visited.items():
        stem = page[: -len(".html")]
        is_notebook = (site_html / "_sources" / f"{stem}.ipynb").exists()
        links = set(r["colab"])
        if is_notebook:
            notebooks += 1
            notebook = f"{book_path}/{stem}.ipynb" if book_path else f"{stem}.ipynb"
            assert (ROOT / notebook).exists(), f"{page}: {notebook} is not in the repository"
            expected = repository.colab_url(notebook)
            if links != {expected}:
                failures[page] = [f"Colab links {sorted(links)}, expected exactly {expected}"]
        elif links:
            failures[page] = [f"a Colab link on a page that is no notebook: {sorted(links)}"]
    assert not failures, "\n" + _collate(failures)
    assert notebooks >= 1


def test_solution_code_is_folded(site_html, visited):
    """Every code cell tagged ``solution`` is folded (myst-nb's hide-input) on its page."""
    import nbformat

    checked = 0
    for page in visited:
        source = site_html / "_sources" / f"{page[: -len('.html')]}.ipynb"
        if not source.exists():
            continue
        nb = nbformat.read(source, as_version=4)
        solutions = [c for c in nb.cells if c.cell_type == "code" and "solution" in c.metadata.get("tags", [])]
        html = (site_html / page).read_text(encoding="utf-8")
        # myst-nb's folded input: <details class="... hide above-input"> without `open`
        folded = len(re.findall(r'<details class="[^"]*\bhide above-input\b[^"]*"(?![^>]*\bopen\b)', html))
        assert folded >= len(solutions), f"{page}: {len(solutions)} solution cells, {folded} folded"
        checked += len(solutions)
    assert checked >= 1


def test_glued_values_are_pasted_without_quotes(site_html, visited):
    """A glued string reads as the string: "reached 70.81%", never "reached ‘70.81’%"."""
    pasted, quoted = 0, {}
    for page in visited:
        html = (site_html / page).read_text(encoding="utf-8")
        # myst-nb's inline paste of a text/plain glue value
        texts = re.findall(r'<span class="[^"]*\btext_plain\b[^"]*">([^<]*)</span>', html)
        pasted += len(texts)
        bad = [t for t in texts if t.startswith(QUOTES)]
        if bad:
            quoted[page] = bad[:5]
    assert not quoted, quoted
    assert pasted >= 50


def test_markdown_tables_in_outputs_render_as_tables(site_html, visited):
    """The chapters' result tables (``report.show_table``'s Markdown) are HTML tables on the
    site, not a paragraph of pipes (CommonMark, myst-nb's default, has no tables)."""
    tables, raw = 0, {}
    for page in visited:
        html = (site_html / page).read_text(encoding="utf-8")
        tables += html.count("<table")
        left = re.findall(r"<p>\|[^<]*\|\n\|", html)
        if left:
            raw[page] = [t[:60] for t in left[:3]]
    assert not raw, raw
    assert tables >= 20


def test_screenshots_saved(visited):
    for name in ("intro.png", "formulation.png", "formulation-exercises.png"):
        path = ARTIFACTS / name
        assert path.exists() and path.stat().st_size > 10_000, path
