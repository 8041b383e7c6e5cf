"""The built book in a real browser: every page renders, with its figures, typeset math, no error
output, and (for chapters) a Colab button pointing at its own notebook.

Both editions are tested: the book (``_build/html``) and the student edition
(``_build/html-student``), whose Colab buttons open the committed ``student/notebooks/`` and whose
pages hold no solution: no line of a solution's code, no answer prose, no answer dropdown (the
solution text is read from the chapters' sources), and an open stub per exercise.

Run with ``make browser-test`` (``python -m sat_core.book browser-test``) after ``make book``;
plain ``pytest`` never collects this folder (``norecursedirs`` in pyproject.toml). Screenshots of
every page (its first 4000 pixels), of every result table a chapter's code made
(``<page>__table<k>.png``) and of chapter 9's stepper before and after a move go to
``_build/screenshots/``.

Nothing here downloads a browser: Playwright drives Debian's ``/usr/bin/chromium``. Requests
that leave 127.0.0.1 are blocked, except MathJax's CDN URL (``.../npm/mathjax@3/...``), which is
answered from the copy that ``sat_core.book.build.ensure_mathjax`` unpacked into ``_build/mathjax``
(fetched once with ``npm pack mathjax@3``).
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
import yaml

from sat_core.book.build import STUDENT, BookError, ensure_mathjax, resolve_entry, toc_entries
from sat_core.book.student import (
    ANSWERS_NOTE,
    BEGIN,
    PLACEHOLDER,
    STUDENT_DIR,
    holds_solutions,
    normalize_text,
    solution_snippets,
)

ROOT = Path(os.environ.get("SAT_BOOK_ROOT", Path(__file__).resolve().parents[2]))
HTML = ROOT / "_build" / "html"
SHOTS = ROOT / "_build" / "screenshots"
EDITIONS = ("book", STUDENT)
# edition -> (its site, the sources its pages were built from, the executed notebooks)
SITES = {"book": HTML, STUDENT: ROOT / "_build" / f"html-{STUDENT}"}
SOURCES = {"book": ROOT, STUDENT: ROOT / "_build" / f"stage-{STUDENT}"}
EXECUTED = {"book": ROOT / "_build" / "stage", STUDENT: SOURCES[STUDENT]}
CHROMIUM = os.environ.get("SAT_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
EXTERNAL = re.compile(r"^https?://(?!127\.0\.0\.1[:/])")
MATHJAX_URL = re.compile(r"/mathjax@3/(?P<path>[^?#]+)")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture(scope="session")
def site_urls() -> Iterator[dict[str, str]]:
    """Serve each edition's site (_build/html, _build/html-student) with http.server in a
    thread; yield {edition: base URL}."""
    servers = []
    try:
        urls = {}
        for edition, html in SITES.items():
            if not (html / "index.html").exists():
                pytest.fail(f"{html} has no index.html: build the book first (make book; the "
                            "student edition alone: python -m sat_core.book build-student)",
                            pytrace=False)
            handler = functools.partial(_QuietHandler, directory=str(html))
            server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
            threading.Thread(target=server.serve_forever, daemon=True).start()
            servers.append(server)
            urls[edition] = f"http://127.0.0.1:{server.server_address[1]}"
        yield urls
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


@pytest.fixture(scope="session")
def site_url(site_urls) -> str:
    """The book's own site (_build/html)."""
    return site_urls["book"]


@pytest.fixture(scope="session")
def mathjax_dir() -> Path:
    try:
        return ensure_mathjax(ROOT / "_build")
    except BookError as err:
        pytest.fail(str(err), pytrace=False)


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        pytest.fail(
            f"{CHROMIUM} not found: install Debian's chromium (apt-get install -y chromium); "
            "Playwright's own browser download is not used",
            pytrace=False,
        )
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser, mathjax_dir):
    """A fresh page whose outside requests are blocked, MathJax's answered locally."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    blocked: list[str] = []

    def route(r):
        url = r.request.url
        m = MATHJAX_URL.search(url)
        if m and (mathjax_dir / m["path"]).is_file():
            r.fulfill(path=str(mathjax_dir / m["path"]))
        else:
            blocked.append(url)
            r.abort()

    context.route(EXTERNAL, route)
    pg = context.new_page()
    pg.blocked_requests = blocked  # type: ignore[attr-defined]
    pg.page_errors = []  # type: ignore[attr-defined]
    pg.on("pageerror", lambda err: pg.page_errors.append(str(err)))
    try:
        yield pg
    finally:
        context.close()


pytestmark = pytest.mark.browser

CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
ENTRIES = toc_entries(ROOT)
RAW_TEX = re.compile(r"\\[A-Za-z]{2,}|\$\$|\\\(|\\\[|\$[^$\s][^$]*\\[A-Za-z]+[^$]*\$")
# Harmless and upstream: Sphinx 7.4 emits sphinx-thebe's inline config script twice (registered
# with filename None, re-added as ''), so the second copy re-declares the same constants.
KNOWN_JS_ERRORS = ("Identifier 'THEBE_JS_URL' has already been declared",)
ERROR_OUTPUTS = ".output.traceback, .output.stderr, .output.error"

RAW_PIPE_TABLE = re.compile(r"\|\s*:?-{3,}:?\s*\|")  # a "| --- |" rule row, as text
RAW_TABLE_TEX = re.compile(r"\\\(|\\[A-Za-z]{2,}|\$[^$\s]")
# Text of every cell output, of the tables in them, and of what outputs render as prose
# (code, tables and MathJax's markup removed): MathJax's assistive copies removed throughout.
OUTPUT_TEXTS_JS = """() => {
  const text = e => { const c = e.cloneNode(true);
    c.querySelectorAll('mjx-container, mjx-assistive-mml, script, style').forEach(x => x.remove());
    return c.innerText; };
  const rendered = e => { const c = e.cloneNode(true);
    c.querySelectorAll('pre, code, table, mjx-container, mjx-assistive-mml, script, style')
      .forEach(x => x.remove());
    return c.innerText; };
  return {all: [...document.querySelectorAll('.cell_output')].map(text),
          tables: [...document.querySelectorAll('.cell_output table')].map(text),
          rendered: [...document.querySelectorAll('.cell_output')].map(rendered)};
}"""

# Visible prose text only: code, outputs and MathJax's own markup removed.
PROSE_TEXT_JS = """() => {
  const root = (document.querySelector('main') || document.body).cloneNode(true);
  root.querySelectorAll('pre, code, script, style, textarea, mjx-container, mjx-assistive-mml, '
      + '.highlight, .cell_input, .cell_output, .headerlink').forEach(e => e.remove());
  return root.innerText;
}"""


# Paths of the machine that built the book: meaningless to a reader (and a leak).
BUILD_PATHS = sorted({str(ROOT), tempfile.gettempdir().rstrip("/") + "/", str(Path.home()) + "/"},
                     key=len, reverse=True)
# Tags a page's markdown may use on purpose; any other <word> is a token the browser would eat.
HTML_TAGS = {"a", "b", "br", "code", "details", "div", "em", "i", "img", "kbd", "li", "ol", "p",
             "pre", "small", "span", "strong", "sub", "summary", "sup", "table", "td", "th", "tr",
             "u", "ul"}
CODE_OR_MATH = re.compile(r"```.*?```|`[^`]*`|\$\$.*?\$\$|\$[^$]*\$", re.S)
# Code listings in outputs that are open on the page (not inside a closed <details>), with lines.
OPEN_LISTINGS_JS = """() => [...document.querySelectorAll('.cell_output .text_html pre')]
  .filter(p => !p.closest('details:not([open])') && p.offsetParent !== null)
  .map(p => p.innerText.split('\\n').length)"""
# Displayed equations (MathJax's display containers) wider than the article's text column.
WIDE_MATH_JS = """() => { const col = document.querySelector('article') || document.body;
  const right = col.getBoundingClientRect().right + 1;
  return [...document.querySelectorAll('mjx-container[display="true"]')]
    .map(m => { const inner = m.firstElementChild || m;
      return [Math.round(inner.getBoundingClientRect().right - col.getBoundingClientRect().left),
              Math.round(right - col.getBoundingClientRect().left)]; })
    .filter(([w, c]) => w > c); }"""
# Output tables wider than the output area that holds them (they scroll sideways inside it).
WIDE_TABLES_JS = """() => [...document.querySelectorAll('.cell_output table')]
  .map(t => { const box = t.closest('.output, .cell_output') || t.parentElement;
    return [Math.round(t.getBoundingClientRect().width), box.clientWidth]; })
  .filter(([w, c]) => w > c + 1)"""
# Widget outputs that need a live kernel: empty boxes on a static page.
WIDGET_AREAS_JS = """() => [...document.querySelectorAll('.cell_output')].filter(o =>
  o.querySelector('script[type*="jupyter.widget"], .jupyter-widgets, .widget-area')).length"""


def page_defects(page, markdown: str) -> list[str]:
    """What a reader would see broken on the loaded ``page`` (built from ``markdown``, the text
    of its source's markdown cells): raw TeX in the prose or in the text an output renders,
    Markdown tables shown as raw pipe text, raw TeX inside output tables, open library listings,
    displayed equations cut off at the column's edge, output tables wider than the column, widget
    areas that need a kernel, the build machine's paths, <tokens> swallowed as HTML tags.
    One message per defect class found; test_the_checks_catch_every_defect_class feeds it a page
    with each of them."""
    problems: list[str] = []
    raw = sorted(set(RAW_TEX.findall(page.evaluate(PROSE_TEXT_JS))))
    if raw:
        problems.append(f"raw LaTeX in the text: {raw[:8]}")
    outputs = page.evaluate(OUTPUT_TEXTS_JS)
    raw_out = sorted({m for t in outputs["rendered"] for m in RAW_TEX.findall(t)})
    if raw_out:
        problems.append(f"raw LaTeX in rendered outputs: {raw_out[:8]}")
    raw_tables = [t[:120] for t in outputs["all"] if RAW_PIPE_TABLE.search(t)]
    if raw_tables:
        problems.append(f"{len(raw_tables)} output(s) show a Markdown table as raw text, the "
                        f"first: {raw_tables[0]!r}")
    raw_in_tables = [t[:120] for t in outputs["tables"] if RAW_TABLE_TEX.search(t)]
    if raw_in_tables:
        problems.append(f"raw TeX in {len(raw_in_tables)} output table(s): {raw_in_tables[0]!r}")

    # library listings are folded: no long open listing in an output, every fold closed
    listings = page.locator("details.sat-listing")
    opened = page.locator("details.sat-listing[open]").count()
    if opened:
        problems.append(f"{opened} of {listings.count()} library listings are open by default")
    long_open = [n for n in page.evaluate(OPEN_LISTINGS_JS) if n > 40]
    if long_open:
        problems.append(f"{len(long_open)} open code listing(s) in the outputs ({long_open} "
                        "lines): show library code with sat_core.listing.show_source")

    # no equation cut off at the column's right edge (it overflows, clipped or scrolled)
    wide = page.evaluate(WIDE_MATH_JS)
    if wide:
        problems.append(f"{len(wide)} displayed equation(s) wider than the text column "
                        f"(width, column): {wide[:3]}")

    wide_tables = page.evaluate(WIDE_TABLES_JS)
    if wide_tables:
        problems.append(f"{len(wide_tables)} output table(s) wider than the text column (width, "
                        f"column): {wide_tables[:3]}")

    # nothing that only a live kernel can draw, no build-machine path, no swallowed <token>
    n_widgets = page.evaluate(WIDGET_AREAS_JS)
    if n_widgets:
        problems.append(f"{n_widgets} output(s) hold a widget that cannot draw without a kernel")
    text = page.evaluate("() => (document.querySelector('main') || document.body).innerText")
    leaked = [p for p in BUILD_PATHS if p in text]
    if leaked:
        at = text.index(leaked[0])
        problems.append(f"build-machine path {leaked[0]!r} on the page: "
                        f"{text[max(0, at - 60):at + 60]!r}")
    eaten = sorted(t for t in angle_tokens(markdown) if t not in text)
    if eaten:
        problems.append(f"the browser swallowed {eaten} as HTML tags (write them in backticks or "
                        "as &lt;...&gt;)")
    return problems


def page_markdown(entry: str, sources: Path = ROOT) -> str:
    """The markdown a page is built from (a notebook's markdown cells, or the .md file)."""
    src = resolve_entry(sources, entry)
    if src.suffix == ".ipynb":
        return "\n".join(c.source for c in nbformat.read(src, as_version=4).cells
                         if c.cell_type == "markdown")
    return src.read_text(encoding="utf-8")


def angle_tokens(markdown: str) -> set[str]:
    """``<start>``-like tokens of the prose (outside code and math) that are not HTML tags."""
    text = CODE_OR_MATH.sub(" ", markdown)
    return {f"<{name}>" for name in re.findall(r"<([a-z][a-z0-9_-]*)>", text)
            if name not in HTML_TAGS}


def expected_title(entry: str, sources: Path = ROOT) -> str:
    """The first '# ' heading of the page's source (markdown file or first markdown cell)."""
    src = resolve_entry(sources, entry)
    if src.suffix == ".ipynb":
        text = "\n".join(
            c.source for c in nbformat.read(src, as_version=4).cells if c.cell_type == "markdown"
        )
    else:
        text = src.read_text(encoding="utf-8")
    m = re.search(r"^# (.+)$", text, flags=re.M)
    assert m, f"{src} has no '# Title' heading"
    return re.sub(r"[`*_]", "", m.group(1)).strip()


def draws(entry: str, sources: Path = ROOT) -> bool:
    """Chapters draw unless their notebook says ``"sat": {"draws": false}`` in its metadata."""
    nb = nbformat.read(resolve_entry(sources, entry), as_version=4)
    return bool(nb.metadata.get("sat", {}).get("draws", True))


FIGURE_MIMES = ("image/png", "image/jpeg", "image/svg+xml")
HIDDEN_TAGS = {"remove-output", "remove-cell"}


def executed_figures(entry: str, executed: Path = EXECUTED["book"]) -> int | None:
    """Images in the outputs of the executed notebook that the page was built from (the staged
    copy papermill wrote), except in cells whose outputs the book removes; None if not staged."""
    staged = executed / f"{entry}.ipynb"
    if not staged.exists():
        return None
    n = 0
    for cell in nbformat.read(staged, as_version=4).cells:
        if cell.cell_type != "code" or HIDDEN_TAGS & set(cell.metadata.get("tags", [])):
            continue
        n += sum(any(m in out.get("data", {}) for m in FIGURE_MIMES) for out in cell.outputs)
    return n


def repository_path(entry: str, edition: str = "book") -> str:
    """Where the notebook of ``entry`` that the edition's Colab button opens lies in the
    repository: the chapter itself, or its committed student copy."""
    parts = [(CONFIG["repository"].get("path_to_book") or "").strip("/")]
    parts += [STUDENT_DIR] if edition == STUDENT else []
    return "/".join([p for p in parts if p] + [f"{entry}.ipynb"])


def colab_url(entry: str, edition: str = "book") -> str:
    repo = CONFIG["repository"]
    org_repo = re.sub(r"^https://github\.com/", "", repo["url"]).strip("/")
    return (
        f"{CONFIG['launch_buttons']['colab_url']}/github/{org_repo}/blob/{repo['branch']}/"
        f"{repository_path(entry, edition)}"
    )


@pytest.mark.parametrize("edition", EDITIONS)
@pytest.mark.parametrize("entry", ENTRIES)
def test_page(edition, entry, page, site_urls):
    html, sources, site_url = SITES[edition], SOURCES[edition], site_urls[edition]
    is_chapter = resolve_entry(sources, entry).suffix == ".ipynb"
    assert (html / f"{entry}.html").exists(), f"{entry}.html was not built"
    response = page.goto(f"{site_url}/{entry}.html", wait_until="load")
    assert response is not None and response.ok, (
        f"{entry}.html: HTTP {response and response.status}"
    )
    problems: list[str] = []

    # 1. it renders: a title and the page's h1
    h1 = page.locator("article h1").first
    title = expected_title(entry, sources)
    if not h1.is_visible():
        problems.append("no visible <h1>")
    elif h1.inner_text().replace("#", "").strip() != title:
        problems.append(f"h1 is {h1.inner_text()!r}, expected {title!r}")
    if title.split()[-1] not in page.title():
        problems.append(f"<title> {page.title()!r} does not name the page")

    # 2. math typeset by MathJax, no raw LaTeX left in the prose
    n_math = page.locator(".math").count()
    if n_math:
        try:
            page.wait_for_function(
                "() => window.MathJax && MathJax.startup && MathJax.startup.promise"
            )
            page.evaluate("() => MathJax.startup.promise")
        except Exception as err:  # playwright's TimeoutError and friends
            problems.append(
                f"MathJax never started ({type(err).__name__}); blocked: {page.blocked_requests}"
            )
        untypeset = page.locator(".math:not(:has(mjx-container))").count()
        if untypeset:
            problems.append(f"{untypeset} of {n_math} math elements were not typeset by MathJax")

    # 3. no error output: tracebacks, stderr streams
    n_err = page.locator(ERROR_OUTPUTS).count()
    if n_err:
        first = page.locator(ERROR_OUTPUTS).first.inner_text()[:300]
        problems.append(f"{n_err} error/stderr output(s), the first: {first!r}")
    if page.locator(".tag_injected-parameters").count():
        problems.append("papermill's injected-parameters cell is visible")

    if is_chapter:
        # 4. its figures are there and loaded
        imgs = page.locator(".cell_output img")
        if draws(entry, sources):
            expected = executed_figures(entry, EXECUTED[edition])
            if imgs.count() == 0:
                problems.append("no figure (<img>) in the cell outputs")
            elif expected is not None and imgs.count() < expected:
                problems.append(f"{imgs.count()} figures on the page, but the executed notebook "
                                f"has {expected} image outputs")
            broken = page.evaluate(
                "() => [...document.querySelectorAll('.cell_output img')]"
                ".filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)"
            )
            if broken:
                problems.append(f"figures that did not load: {broken}")
        # 5. the Colab button opens this chapter's notebook (the student edition: its
        # committed student copy, which must exist and hold no solution)
        links = page.locator("a[href*='colab.research.google.com']")
        hrefs = [links.nth(i).get_attribute("href") for i in range(links.count())]
        if edition == STUDENT:
            target = ROOT / repository_path(entry, edition)
            if not target.is_file():
                problems.append(f"the Colab button opens {repository_path(entry, edition)}, "
                                "which the repository lacks (make student, then commit)")
            elif holds_solutions(nbformat.read(target, as_version=4)):
                problems.append(f"{repository_path(entry, edition)} holds solutions")
        if hrefs != [colab_url(entry, edition)]:
            problems.append(f"Colab link(s) {hrefs}, expected [{colab_url(entry, edition)!r}]")
        else:
            page.locator(".dropdown-launch-buttons button").first.click()
            if not links.first.is_visible():
                problems.append("the launch (rocket) menu does not show the Colab entry")

    # 6-8. the defect classes a reader sees (page_defects): raw tables and TeX, open listings,
    # widget areas, build-machine paths, swallowed <tokens>
    problems += page_defects(page, page_markdown(entry, sources))

    js_errors = [e for e in page.page_errors if not any(k in e for k in KNOWN_JS_ERRORS)]
    if js_errors:
        problems.append(f"JavaScript errors: {js_errors[:3]}")

    SHOTS.mkdir(parents=True, exist_ok=True)
    height = min(page.evaluate("() => document.documentElement.scrollHeight"), 4000)
    prefix = "" if edition == "book" else f"{edition}__"
    page.screenshot(
        path=str(SHOTS / f"{prefix}{entry.replace('/', '__')}.png"),
        full_page=True,
        clip={"x": 0, "y": 0, "width": 1280, "height": height},
    )
    # every result table the page's code made, for review (the page shot stops at 4000 px)
    tables = page.locator(".cell_output table")
    for k in range(tables.count()):
        tables.nth(k).scroll_into_view_if_needed()
        tables.nth(k).screenshot(path=str(SHOTS / f"{prefix}{entry.replace('/', '__')}__table"
                                          f"{k + 1}.png"))
    assert not problems, f"{entry}.html:\n  " + "\n  ".join(problems)


STEPPER_STATE_JS = """() => {
  const s = document.querySelector('.sat-stepper');
  const shown = [...s.querySelectorAll('.sat-frame')].filter(f => getComputedStyle(f).display !== 'none');
  return {n: shown.length, src: shown.length ? shown[0].querySelector('img').src : '',
          caption: shown.length ? shown[0].innerText : ''};
}"""


def test_chapter_9_steps_through_attention_without_a_kernel(page, site_url):
    """The word-by-word control of chapter 9 works on the static page: clicking a word or moving
    the slider shows that word's map (a different picture), one frame at a time."""
    entry = next(e for e in ENTRIES if e.endswith("09_seeing_attention"))
    page.goto(f"{site_url}/{entry}.html", wait_until="load")
    stepper = page.locator(".sat-stepper").first
    assert stepper.is_visible(), "chapter 9 has no visible attention stepper"
    labels = stepper.locator(".sat-words label")
    assert labels.count() >= 3, f"only {labels.count()} words to step through"
    first = page.evaluate(STEPPER_STATE_JS)
    assert first["n"] == 1 and first["caption"].startswith("t = 1:"), first
    SHOTS.mkdir(parents=True, exist_ok=True)
    stepper.screenshot(path=str(SHOTS / "09_stepper_word1.png"))  # before and after a move
    labels.nth(2).click()
    third = page.evaluate(STEPPER_STATE_JS)
    assert third["n"] == 1 and third["caption"].startswith("t = 3:"), third
    assert third["src"] != first["src"], "word 3 shows the same picture as word 1"
    page.evaluate("""() => { const r = document.querySelector('.sat-stepper input[type=range]');
        r.value = 1; r.dispatchEvent(new Event('input')); }""")
    second = page.evaluate(STEPPER_STATE_JS)
    assert second["n"] == 1 and second["caption"].startswith("t = 2:"), second
    assert second["src"] not in (first["src"], third["src"]), "word 2 shows another word's map"
    stepper.screenshot(path=str(SHOTS / "09_stepper_word2.png"))



# One page with every defect class the book once had, and the same page repaired.
LONG_LISTING = "\n".join(f"line {i} of library code" for i in range(50))
DEFECTS = {
    "raw LaTeX in the text": "<p>the weights \\alpha_t sum to one</p>",
    "raw LaTeX in rendered outputs": '<div class="cell_output"><div class="output text_html">'
                                     "<p>the gate \\beta_t of each word</p></div></div>",
    "Markdown table as raw text": '<div class="cell_output"><div class="output text_markdown">'
                                  "<p>| model | BLEU-4 | | --- | --- | | soft | 0.9 |</p></div></div>",
    "raw TeX in 1 output table": '<div class="cell_output"><table><tr><th>step $t$</th></tr>'
                                 "<tr><td>1</td></tr></table></div>",
    "library listings are open": '<div class="cell_output"><details class="sat-listing" open>'
                                 "<summary>show the code</summary><pre>x = 1</pre></details></div>",
    "open code listing(s)": '<div class="cell_output"><div class="output text_html"><pre>'
                            f"{LONG_LISTING}</pre></div></div>",
    "cannot draw without a kernel": '<div class="cell_output"><script type="application/'
                                    'vnd.jupyter.widget-view+json">{}</script></div>',
    "build-machine path": f"<p>saved to {ROOT}/artifacts/ch06/best.pt</p>",
    "wider than the text column": '<article style="width: 600px"><mjx-container display="true" '
                                  'style="display: block; overflow-x: auto"><mjx-math '
                                  'style="display: inline-block; width: 1400px">x</mjx-math>'
                                  "</mjx-container></article>",
    "table(s) wider than the text column": '<article style="width: 600px"><div class='
                                            '"cell_output"><table style="width: 900px"><tr>'
                                            "<td>1</td></tr></table></div></article>",
    "swallowed ['<start>']": "<p>the caption begins with <start> and ends</p>",
}
REPAIRED = ('<p>the weights <span class="math">typeset</span> sum to one</p>'
            '<div class="cell_output"><table><tr><th>step</th></tr><tr><td>1</td></tr></table>'
            '<details class="sat-listing"><summary>show the code</summary><pre>x = 1</pre>'
            "</details></div><p>saved to ../artifacts/ch06/best.pt</p>"
            "<p>the caption begins with &lt;start&gt; and ends</p>")


def test_the_checks_catch_every_defect_class(browser):
    """page_defects reports each defect class on a page that has it (one page per class, so
    that one check cannot hide behind another), and nothing on the repaired page."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        pg = context.new_page()
        markdown = "the caption begins with <start> and ends"  # the source of the last two
        for name, body in DEFECTS.items():
            pg.set_content(f"<html><body><main>{body}</main></body></html>")
            found = page_defects(pg, markdown if "<start>" in body else "")
            assert len(found) == 1 and name in found[0], (name, found)
        pg.set_content(f"<html><body><main>{REPAIRED}</main></body></html>")
        assert page_defects(pg, markdown) == []
    finally:
        context.close()

# --------------------------------------------------------------------------- the student edition

CHAPTERS = [e for e in ENTRIES if resolve_entry(ROOT, e).suffix == ".ipynb"]
# A page's article text, folded cells and closed dropdowns included; MathJax's markup removed.
ARTICLE_TEXT_JS = """() => {
  const a = (document.querySelector('article') || document.querySelector('main')
             || document.body).cloneNode(true);
  a.querySelectorAll('mjx-container, mjx-assistive-mml, script, style').forEach(e => e.remove());
  return a.textContent;
}"""
DROPDOWN_TITLES_JS = """() => [...document.querySelectorAll('.dropdown.admonition .admonition-title')]
  .map(e => e.textContent.trim())"""
MARKERS = ("BEGIN SOLUTION", "END SOLUTION")


def plain(text: str) -> str:
    """``text`` as compared with a page: whitespace normalised, Sphinx's curly quotes straight."""
    return normalize_text(text).replace("\u2019", "'").replace("\u2018", "'")


def shown_outside_solutions(entry: str) -> str:
    """The text of the executed chapter's outputs, solution cells left out: a solution line that
    also appears there (a library listing, a log) is on the page for another reason."""
    staged = EXECUTED["book"] / f"{entry}.ipynb"
    if not staged.exists():
        return ""
    parts = []
    for cell in nbformat.read(staged, as_version=4).cells:
        if cell.cell_type == "code" and "solution" not in cell.metadata.get("tags", []):
            for out in cell.outputs:
                parts.append(str(out.get("text", "")))
                parts += [str(v) for v in out.get("data", {}).values()]
    return plain("\n".join(parts))


@pytest.mark.parametrize("entry", CHAPTERS)
def test_student_page_shows_open_exercises_and_no_solution(entry, page, site_urls):
    """The solution text of the chapter's source (each solution line, each run of answer prose:
    :func:`sat_core.book.student.solution_snippets`) is on the book's page and nowhere on the student
    edition's; no answer dropdown there either; each exercise shows its open stub, unfolded."""
    source = nbformat.read(ROOT / f"{entry}.ipynb", as_version=4)
    elsewhere = shown_outside_solutions(entry)
    snippets = [s for s in map(plain, solution_snippets(source)) if s not in elsewhere]
    blocks = sum(bool(BEGIN.match(ln)) for c in source.cells if c.cell_type == "code"
                 for ln in c.source.split("\n"))
    answers = sum(ln.lstrip().startswith(":::{admonition} Answer")
                  for c in source.cells if c.cell_type == "markdown" for ln in c.source.split("\n"))
    assert snippets and blocks, f"{entry}: no exercise with a solution in the source"
    text, dropdowns = {}, {}
    for edition in EDITIONS:
        page.goto(f"{site_urls[edition]}/{entry}.html", wait_until="load")
        text[edition] = plain(page.evaluate(ARTICLE_TEXT_JS))
        dropdowns[edition] = [t for t in page.evaluate(DROPDOWN_TITLES_JS)
                              if t.startswith("Answer")]
    student = text[STUDENT]
    problems: list[str] = []
    missing = [s for s in snippets if s not in text["book"]]
    if missing:  # the search itself must see what it looks for
        problems.append(f"{len(missing)} solution snippet(s) not found on the book's page either "
                        f"(the text extraction is broken?): {missing[:3]}")
    leaked = [s for s in snippets if s in student]
    if leaked:
        problems.append(f"{len(leaked)} of {len(snippets)} solution snippets on the student page: "
                        f"{leaked[:3]}")
    problems += [f"{m!r} on the student page" for m in MARKERS if m in student]
    if len(dropdowns["book"]) != answers:
        problems.append(f"the book's page has {len(dropdowns['book'])} Answers dropdowns, its "
                        f"source {answers}")
    if dropdowns[STUDENT]:
        problems.append(f"answer dropdowns on the student page: {dropdowns[STUDENT]}")
    note = plain(ANSWERS_NOTE.replace("*", ""))
    if student.count(note) != answers:
        problems.append(f"{student.count(note)} notes {note!r} on the student page, expected "
                        f"{answers} (one per answer block)")
    stubs = page.locator(".cell_input", has_text=PLACEHOLDER)
    visible = sum(stubs.nth(i).is_visible() for i in range(stubs.count()))
    if (stubs.count(), visible) != (blocks, blocks):
        problems.append(f"{stubs.count()} open stub(s) ({visible} visible) on the student page, "
                        f"expected {blocks} visible (one per solution block)")
    assert not problems, f"{entry}.html (student edition):\n  " + "\n  ".join(problems)


def test_student_site_holds_no_solution_in_any_file():
    """Every file of the student site (pages, the search index, the notebooks offered for
    download under _sources): no solution marker, no notebook with solutions; the book's site
    has them (so the scan looks at the right files)."""
    def scan(site: Path) -> list[str]:
        hits = []
        for path in sorted(site.rglob("*")):
            if path.is_file() and path.suffix in {".html", ".js", ".ipynb", ".md", ".txt"}:
                content = path.read_text(encoding="utf-8", errors="replace")
                if any(m in content for m in MARKERS):
                    hits.append(path.relative_to(site).as_posix())
                elif path.suffix == ".ipynb" and holds_solutions(nbformat.reads(content, 4)):
                    hits.append(path.relative_to(site).as_posix())
        return hits

    student_site = SITES[STUDENT]
    if not (student_site / "index.html").exists():
        pytest.fail(f"{student_site} is missing: run make book", pytrace=False)
    assert scan(student_site) == []
    book = scan(HTML)
    assert any(p.startswith("_sources/notebooks/") for p in book), book
    assert sum(p.startswith("notebooks/") for p in book) >= 1, book
