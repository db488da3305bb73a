"""The built book: links configured in one place, every page healthy in a real browser.

`make test` builds the book (cached) before running the suite; these tests read book/_build/html.
"""
import functools
import http.server
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import unquote, urljoin, urlparse

import pytest

from conftest import ROOT

HTML = ROOT / "book" / "_build" / "html"
SCREENSHOTS = ROOT / "book" / "_build" / "screenshots"


def built_pages() -> list[Path]:
    if not (HTML / "index.html").exists():
        pytest.fail("book/_build/html is missing: run `make book` (make test builds it first)")
    return sorted(p for p in HTML.rglob("*.html") if not p.relative_to(HTML).parts[0].startswith("_"))


def test_every_colab_link_points_to_an_existing_notebook():
    from lecture_utils import config

    prefix = f"https://colab.research.google.com/github/{config.GITHUB_ORG}/{config.GITHUB_REPO}/blob/{config.GITHUB_BRANCH}/"
    links = set()
    for page in built_pages():
        links.update(re.findall(r'https://colab\.research\.google\.com/[^"\'<> ]+', page.read_text()))
    assert links, "no Colab links in the book"
    for link in sorted(links):
        assert link.startswith(prefix), f"{link} does not use the repository configured in lecture_utils/config.py"
        path = ROOT / link[len(prefix):]
        assert path.suffix == ".ipynb" and path.is_file(), f"{link} points to a notebook that does not exist"
    assert any("assignments/a1_pytorch/a1_pytorch.ipynb" in link for link in links)


def test_every_page_draws_figures_from_code():
    pages = [p for p in (HTML / "ch12").glob("*.html")]
    images = sum(len(re.findall(r"<img[^>]+_images/", p.read_text())) for p in pages)
    assert images >= 6
    assert not list((ROOT / "book").rglob("*.png")) or all("_build" in p.parts for p in (ROOT / "book").rglob("*.png")), "figures must be generated, not committed"


def test_first_use_of_terms_gives_the_chinese_term():
    text = (HTML / "ch12" / "tensors_autograd.html").read_text()
    for term in ("张量", "计算图", "反向传播", "梯度累加", "上下文管理器"):
        assert term in text


@pytest.fixture(scope="module")
def server():
    class Handler(http.server.SimpleHTTPRequestHandler):
        """Serves the built book; remembers every request it could not answer (NOT_FOUND)."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(HTML), **kwargs)

        def log_request(self, code="-", size="-"):
            if str(getattr(code, "value", code)).startswith("4"):
                NOT_FOUND.append(f"HTTP {getattr(code, 'value', code)} for {self.path}")

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


# requests the server answered with 4xx, including those the browser makes on its own (/favicon.ico),
# which some Chromium versions report as console errors and others do not
NOT_FOUND: list[str] = []


PAGE_CHECK = """() => {
  const imgs = [...document.images].map(i => ({src: i.getAttribute('src'), ok: i.complete && i.naturalWidth > 0}));
  const math = [...document.querySelectorAll('.math')];
  const unrendered = math.filter(m => !m.querySelector('mjx-container')).map(m => m.textContent.slice(0, 60));
  const main = document.querySelector('main') || document.body;
  return {imgs, nmath: math.length, unrendered, raw: main.innerText.includes('$$'),
          links: [...document.querySelectorAll('a[href]')].map(a => a.getAttribute('href'))};
}"""


@pytest.mark.slow
def test_every_page_loads_cleanly_in_chromium(browser, server):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    problems = []
    for page_path in built_pages():
        rel = page_path.relative_to(HTML).as_posix()
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors = []
        page.on("console", lambda msg, errors=errors: msg.type == "error" and errors.append(msg.text))
        page.on("pageerror", lambda exc, errors=errors: errors.append(str(exc)))
        page.on("response", lambda r, errors=errors: r.status >= 400 and errors.append(f"HTTP {r.status} for {r.url}"))
        response = page.goto(f"{server}/{rel}", wait_until="networkidle")
        if response is None or response.status != 200:
            problems.append(f"{rel}: HTTP {response.status if response else 'no response'}")
        if rel != "search.html":  # search runs its own scripts; math pages wait for MathJax
            page.wait_for_function("() => !window.MathJax || !MathJax.startup || MathJax.startup.promise", timeout=20000)
            page.evaluate("() => window.MathJax && MathJax.startup ? MathJax.startup.promise : null")
        info = page.evaluate(PAGE_CHECK)
        problems += [f"{rel}: console error: {e}" for e in errors]
        problems += [f"{rel}: image not loaded: {i['src']}" for i in info["imgs"] if not i["ok"]]
        problems += [f"{rel}: math not rendered: {m}" for m in info["unrendered"]]
        if info["raw"]:
            problems.append(f"{rel}: raw $$ left in the page")
        for href in info["links"]:
            url = urlparse(href)
            if url.scheme or href.startswith(("#", "mailto:")):
                continue
            target = (page_path.parent / unquote(url.path)).resolve()
            if url.path and not target.exists():
                problems.append(f"{rel}: broken internal link {href}")
        if rel in {"intro.html", "ch12/tensors_autograd.html", "ch12/graphs_compilation.html", "assignments/a1_pytorch.html", "glossary.html"}:
            page.screenshot(path=str(SCREENSHOTS / (rel.replace("/", "_") + ".png")), full_page=False)
        page.close()
    problems += [f"server: {line}" for line in sorted(set(NOT_FOUND))]
    assert not problems, "\n".join(problems[:40])
    assert len(list(SCREENSHOTS.glob("*.png"))) == 5


# COURSE_SPEC §9, Lecture 12: each item and the words that show it is taught in chapter 12.
# Legibility of the figures where the book shows them: the check's minimums, in one place.
FIGURE_VIEWPORT_PX = 1280        # measured at a laptop's width (the content column is then ~690 px)
FIGURE_MIN_HEIGHT_PX = 180       # a figure shown lower than this is a strip nobody can read
FIGURE_MIN_TEXT_PX = 8           # the smallest text of a figure, at its displayed size, in CSS px
FIGURE_SMALLEST_FONT_PT = 8      # the smallest font size figures are drawn with (checked in the sources below)
PHONE_VIEWPORT_PX = 390          # a phone's width (the content column is then ~358 px)
PHONE_MIN_TEXT_PX = 8            # text in the page at 390 px; a figure below it must open at full resolution on a tap
# Diagrams (drawn as SVG with real text, whose size the check reads from the file) must be readable in the page on
# a phone, without a tap: these seven were not (labels ~6 px at 390 px), the check keeps every SVG figure readable.
PHONE_DIAGRAMS = {"ch14/fast_rcnn": 1, "ch14/rpn_faster_rcnn": 1, "ch14/fpn": 1, "ch14/retinanet_focal": 1,
                  "ch15/semantic_fcn": 3, "ch15/instance_mask_rcnn": 2, "ch15/panoptic_keypoints": 4}
# Where the screenshots of the figures the issue was about are saved (at 1280 and 390 px).
FIGURE_SCREENSHOT_PAGES = ["ch13/nms_map", "ch13/boxes_iou", "ch13/proposals_rcnn", "ch13/tasks_transfer"]
FIGURE_SCREENSHOT_WIDTHS = [1280, 390]
FIGURE_SCREENSHOTS = SCREENSHOTS / "figures"

FIGURES_ON_PAGE = """() => [...document.querySelectorAll('main img')]
  .filter(i => (i.getAttribute('src') || '').includes('_images/'))
  .map(i => { const r = i.getBoundingClientRect(); const a = i.closest('a');
              return {src: i.getAttribute('src'), natural_w: i.naturalWidth, natural_h: i.naturalHeight,
                      shown_w: r.width, shown_h: r.height, zoom: a ? a.href === i.src : false}; })"""


def figure_text_px(natural_w: float, shown_w: float, dpi: float, font_pt: float = FIGURE_SMALLEST_FONT_PT) -> float:
    """The displayed height, in CSS px, of text drawn at ``font_pt`` in a figure rendered at ``dpi``.

    A matplotlib figure W inches wide saved at ``dpi`` is W×dpi px wide (``natural_w``) and draws a
    ``font_pt`` font ``font_pt/72×dpi`` px tall; the page scales the image to ``shown_w`` px, so that
    text is shown ``font_pt/72 × dpi × shown_w/natural_w`` px tall. The figure's dpi is read from the
    PNG (matplotlib writes it); the font size is the smallest the figure code may use, which
    ``test_figure_code_draws_no_text_below_the_minimum_size`` enforces in the sources.
    """
    return font_pt / 72 * dpi * shown_w / natural_w


def png_dpi(path: Path) -> float:
    from PIL import Image

    with Image.open(path) as image:
        dpi = image.info.get("dpi", (100, 100))[0]  # matplotlib's inline figures: 100 unless set
    return float(dpi) if dpi and dpi > 1 else 100.0


SVG_FONT_SIZE = re.compile(r"font-size:\s*([\d.]+)px")


def svg_text(path: Path) -> tuple[float, float]:
    """(smallest font size, viewBox width) of an SVG figure, both in the SVG's user units.

    The diagrams are written by matplotlib with ``svg.fonttype: none``: every label is a ``<text>`` whose
    style gives its size, so its displayed height is ``size × shown_w / viewBox width``, exactly.
    """
    source = path.read_text()
    view_box = re.search(r'viewBox="[\d.\-]+ [\d.\-]+ ([\d.]+) [\d.]+"', source)
    sizes = [float(s) for s in SVG_FONT_SIZE.findall(source)]
    assert view_box and sizes, f"{path.name}: no viewBox or no <text> with a font size (is svg.fonttype 'none'?)"
    return min(sizes), float(view_box[1])


def shown_text_px(rel: str, fig: dict) -> float:
    """The smallest text of a figure as the page shows it, in CSS px: exact for SVG, the 8 pt bound for PNG."""
    path = HTML / unquote(urlparse(urljoin(f"/{rel}.html", fig["src"])).path).lstrip("/")
    if path.suffix == ".svg":
        size, width = svg_text(path)
        return size * fig["shown_w"] / width
    return figure_text_px(fig["natural_w"], fig["shown_w"], png_dpi(path))


def test_figure_text_size_criterion():
    # 1647 px image of a 16.5 in figure at 100 dpi shown at 688 px: 8 pt text is 4.6 px
    assert round(figure_text_px(1647, 688, 100), 1) == 4.6
    # a 6.4 in figure at 100 dpi shown at its natural width: 8 pt is 11.1 px
    assert round(figure_text_px(640, 640, 100), 1) == 11.1


SMALL_FONT = re.compile(r"""\b(?:fontsize|size|labelsize)\s*=\s*(?:(\d+(?:\.\d+)?)\b|["'](xx-small|x-small)["'])""")


def test_figure_code_draws_no_text_below_the_minimum_size():
    """No figure cell asks for text smaller than FIGURE_SMALLEST_FONT_PT (what the size check assumes)."""
    problems = []
    for source in sorted((ROOT / "book" / "_src").rglob("*.md")) + [ROOT / "lecture_utils" / "viz.py"]:
        for lineno, line in enumerate(source.read_text().splitlines(), 1):
            for number, named in SMALL_FONT.findall(line):
                if named or float(number) < FIGURE_SMALLEST_FONT_PT:
                    problems.append(f"{source.relative_to(ROOT)}:{lineno}: text below {FIGURE_SMALLEST_FONT_PT} pt: {line.strip()}")
    assert not problems, "\n".join(problems)


@pytest.mark.slow
def test_figures_are_legible_where_they_are_shown(browser, server):
    """Every figure of the chapters, measured in Chromium at 1280 px: tall enough, text big enough.

    Also saves screenshots of the figures of FIGURE_SCREENSHOT_PAGES at 1280 and 390 px into
    book/_build/screenshots/figures/ (<page>-<n>-<width>.png), to look at.
    """
    if FIGURE_SCREENSHOTS.exists():
        shutil.rmtree(FIGURE_SCREENSHOTS)
    FIGURE_SCREENSHOTS.mkdir(parents=True)
    problems, measured = [], 0
    chapter_pages = [p for p in built_pages() if re.fullmatch(r"ch\d+", p.parent.name)]
    for page_path in chapter_pages:
        rel = page_path.relative_to(HTML).with_suffix("").as_posix()
        widths = FIGURE_SCREENSHOT_WIDTHS if rel in FIGURE_SCREENSHOT_PAGES else [FIGURE_VIEWPORT_PX]
        for width in widths:
            page = browser.new_page(viewport={"width": width, "height": 900})
            page.goto(f"{server}/{rel}.html", wait_until="networkidle")
            figures = page.evaluate(FIGURES_ON_PAGE)
            if width == FIGURE_VIEWPORT_PX:
                for n, fig in enumerate(figures, 1):
                    measured += 1
                    where = f"{rel} figure {n} ({fig['natural_w']}×{fig['natural_h']} px shown at {fig['shown_w']:.0f}×{fig['shown_h']:.0f})"
                    if fig["shown_h"] < FIGURE_MIN_HEIGHT_PX:
                        problems.append(f"{where}: shown {fig['shown_h']:.0f} px high, below {FIGURE_MIN_HEIGHT_PX} px")
                    text = shown_text_px(rel, fig)
                    if text < FIGURE_MIN_TEXT_PX:
                        problems.append(f"{where}: its smallest text is shown {text:.1f} px tall, below {FIGURE_MIN_TEXT_PX} px "
                                        f"(at most {FIGURE_SMALLEST_FONT_PT / 72 * fig['shown_w'] / FIGURE_MIN_TEXT_PX:.1f} in of figure per "
                                        f"{FIGURE_SMALLEST_FONT_PT} pt of text fits: lay it out in rows)")
            if rel in FIGURE_SCREENSHOT_PAGES:
                for n, image in enumerate(page.locator("main img[src*='_images/']").all(), 1):
                    image.scroll_into_view_if_needed()
                    image.screenshot(path=str(FIGURE_SCREENSHOTS / f"{rel.split('/')[-1]}-{n}-{width}.png"))
            page.close()
    assert measured >= 10, f"only {measured} figures found in the chapters"
    assert len(list(FIGURE_SCREENSHOTS.glob("*.png"))) >= 2 * len(FIGURE_SCREENSHOT_PAGES)
    assert not problems, "figures not legible where they are shown:\n" + "\n".join(problems)


def measure_phone_figures(browser, server) -> tuple[list[str], list[dict]]:
    """Every figure of the chapters at PHONE_VIEWPORT_PX: problems, and what was measured."""
    problems, measured = [], []
    for page_path in [p for p in built_pages() if re.fullmatch(r"ch\d+", p.parent.name)]:
        rel = page_path.relative_to(HTML).with_suffix("").as_posix()
        page = browser.new_page(viewport={"width": PHONE_VIEWPORT_PX, "height": 844})
        page.goto(f"{server}/{rel}.html", wait_until="networkidle")
        for n, fig in enumerate(page.evaluate(FIGURES_ON_PAGE), 1):
            svg = fig["src"].endswith(".svg")
            text = shown_text_px(rel, fig)
            measured.append({"page": rel, "n": n, "svg": svg, "text_px": text, "zoom": fig["zoom"]})
            where = f"{rel} figure {n} at {PHONE_VIEWPORT_PX} px ({'SVG' if svg else 'PNG'} shown {fig['shown_w']:.0f} px wide)"
            if PHONE_DIAGRAMS.get(rel) == n and not svg:
                problems.append(f"{where}: a diagram of PHONE_DIAGRAMS is not drawn as SVG (show_vector)")
            if svg and text < PHONE_MIN_TEXT_PX:
                problems.append(f"{where}: a diagram's smallest text is {text:.1f} px, below {PHONE_MIN_TEXT_PX} px: draw it narrower or with larger type")
            elif text < PHONE_MIN_TEXT_PX and not fig["zoom"]:
                problems.append(f"{where}: its text is {text:.1f} px and a tap does not open it at full resolution")
            if not svg and text < PHONE_MIN_TEXT_PX:      # opened by a tap, the image is shown at its natural size
                full = figure_text_px(fig["natural_w"], fig["natural_w"], png_dpi(HTML / unquote(urlparse(urljoin(f"/{rel}.html", fig["src"])).path).lstrip("/")))
                if full < FIGURE_MIN_TEXT_PX:
                    problems.append(f"{where}: even at full resolution its text is {full:.1f} px")
        if rel in PHONE_DIAGRAMS:
            image = page.locator("main img[src*='_images/']").nth(PHONE_DIAGRAMS[rel] - 1)
            image.scroll_into_view_if_needed()
            FIGURE_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            image.screenshot(path=str(FIGURE_SCREENSHOTS / f"{rel.split('/')[-1]}-diagram-{PHONE_VIEWPORT_PX}.png"))
        page.close()
    return problems, measured


@pytest.mark.slow
def test_figures_are_legible_on_a_phone(browser, server):
    """At 390 px every diagram (SVG) is readable in the page (smallest text >= 8 px, the seven of PHONE_DIAGRAMS
    among them); a chart whose labels are smaller opens at full resolution when tapped (course.js), where its
    8 pt text is 11 px at 100 dpi. Screenshots of the seven: book/_build/screenshots/figures/*-diagram-390.png."""
    problems, measured = measure_phone_figures(browser, server)
    assert len(measured) >= 10
    assert sum(m["svg"] for m in measured) >= len(PHONE_DIAGRAMS)
    assert all(m["zoom"] for m in measured), "course.js did not link every figure to its full-resolution image"
    assert not problems, "figures not legible on a phone:\n" + "\n".join(problems)


PAGE_FIT = """() => {
  const main = document.querySelector('main') || document.body;
  const equations = [...main.querySelectorAll('mjx-container[display="true"]')].map(m => ({
    tex: (m.querySelector('mjx-assistive-mml') || m).textContent.replace(/\\s+/g, ' ').slice(0, 50),
    width: m.scrollWidth, box: m.clientWidth, overflow: getComputedStyle(m).overflowX,
    number: [...document.querySelectorAll('mjx-container[display="true"]')].indexOf(m) + 1}));
  const escapes = [...main.querySelectorAll('mjx-container mjx-c.mjx-c5C')].length;
  const outputs = [...main.querySelectorAll('div.cell_output pre')].filter(p => p.scrollWidth > p.clientWidth + 1)
    .map(p => p.textContent.split('\\n').sort((a, b) => b.length - a.length)[0].slice(0, 60));
  return {page: document.documentElement.scrollWidth, viewport: window.innerWidth, equations, escapes, outputs};
}"""


@pytest.mark.slow
def test_equations_and_pages_fit_the_screen(browser, server):
    """At 1280 px every display equation fits its column and no output line runs past its box; at 390 px no
    page scrolls sideways, and an equation wider than the column scrolls inside its own box. No equation shows
    a TeX escape (a rendered backslash, as `\\text{output\\_padding}` did)."""
    problems, widest = [], {}
    for page_path in built_pages():
        rel = page_path.relative_to(HTML).as_posix()
        if rel in {"search.html", "genindex.html"}:
            continue
        for width in (FIGURE_VIEWPORT_PX, PHONE_VIEWPORT_PX):
            page = browser.new_page(viewport={"width": width, "height": 900})
            page.goto(f"{server}/{rel}", wait_until="networkidle")
            page.evaluate("() => window.MathJax && MathJax.startup ? MathJax.startup.promise : null")
            fit = page.evaluate(PAGE_FIT)
            page.close()
            if fit["page"] > fit["viewport"]:
                problems.append(f"{rel} at {width} px: the page is {fit['page']} px wide and scrolls sideways")
            if fit["escapes"]:
                problems.append(f"{rel}: {fit['escapes']} TeX escape(s) rendered as a backslash in an equation")
            for eq in fit["equations"]:
                widest[(width, rel, eq["number"])] = (eq["width"], eq["box"])
                if eq["width"] <= eq["box"] + 1:
                    continue
                if width == FIGURE_VIEWPORT_PX:
                    problems.append(f"{rel} at {width} px: display equation {eq['number']} is {eq['width']} px wide in a "
                                    f"{eq['box']} px column: break it (aligned) {eq['tex']!r}")
                elif eq["overflow"] not in ("auto", "scroll"):
                    problems.append(f"{rel} at {width} px: display equation {eq['number']} ({eq['width']} px) neither fits nor scrolls")
            if width == FIGURE_VIEWPORT_PX:
                problems += [f"{rel} at {width} px: an output line runs past its box: {line!r}" for line in fit["outputs"]]
    assert len(widest) >= 40, f"only {len(widest)} display equations measured"
    assert not problems, "\n".join(problems[:40])


def test_chinese_web_font_covers_the_book():
    """book/_static/fonts/course-cjk.woff has every Chinese character of the book's sources."""
    proc = subprocess.run([sys.executable, str(ROOT / "book" / "_ext" / "cjk_font.py"), "--check"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    built = HTML / "_static" / "fonts" / "course-cjk.woff"
    assert built.exists() and built.read_bytes() == (ROOT / "book" / "_static" / "fonts" / "course-cjk.woff").read_bytes()


@pytest.mark.slow
def test_chinese_terms_use_the_books_web_font(browser, server):
    """Chromium loads the book's CJK subset for a page with Chinese terms and renders them with it."""
    page = browser.new_page(viewport={"width": PHONE_VIEWPORT_PX, "height": 844})
    page.goto(f"{server}/glossary.html", wait_until="networkidle")
    state = page.evaluate("""async () => { await document.fonts.ready;
      const faces = [...document.fonts].filter(f => f.family.replace(/"/g, '') === 'Course CJK');
      return {faces: faces.map(f => f.status), family: getComputedStyle(document.querySelector('main dd')).fontFamily,
              check: document.fonts.check('16px "Course CJK"', '张量术语表')}; }""")
    page.close()
    assert "loaded" in state["faces"], state
    assert state["family"].lstrip().startswith('"Course CJK"'), state
    assert state["check"], state


@pytest.mark.slow
def test_search_snippets_show_formulas_as_text(browser, server):
    """Search results quote the page around the match; a formula there reads as text (p_t, α), not as TeX."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(f"{server}/search.html?q=focal+loss", wait_until="networkidle")
    page.wait_for_selector("#search-results ul.search li p.context", timeout=30000)
    page.wait_for_timeout(1500)                      # the snippets arrive one by one
    snippets = page.evaluate("() => [...document.querySelectorAll('#search-results li p.context')].map(p => p.textContent)")
    page.close()
    assert len(snippets) >= 3, snippets
    tex = [s for s in snippets if re.search(r"\\[()\[\]]|\\[a-zA-Z]{2,}", s)]
    assert not tex, f"search snippets show TeX: {tex[:3]}"


@pytest.mark.slow
def test_assignment_tables_fit_the_page_on_a_phone(browser, server):
    """At 390 px no assignment table is wider than the text column, and no cell's content spills out."""
    problems = []
    for rel in ["assignments/index.html", *[f"assignments/{p.stem}.html" for p in (ROOT / "book" / "assignments").glob("a*.md")]]:
        page = browser.new_page(viewport={"width": 390, "height": 844})
        page.goto(f"{server}/{rel}", wait_until="networkidle")
        for table in page.evaluate("""() => [...document.querySelectorAll('main table')].map(t => ({
              wide: t.scrollWidth - (t.closest('.pst-scrollable-table-container') || t.parentElement).clientWidth,
              spill: [...t.querySelectorAll('td, th')].filter(c => c.scrollWidth > c.clientWidth + 1).map(c => c.textContent.trim().slice(0, 40))}))"""):
            if table["wide"] > 1:
                problems.append(f"{rel}: a table is {table['wide']} px wider than the column")
            problems += [f"{rel}: cell overflows: {cell}" for cell in table["spill"]]
        page.close()
    assert not problems, "\n".join(problems)


L12_CHECKLIST = {
    "framework values": ["prototyping", "automatic gradients", "GPU"],
    "Tensor / Autograd / nn.Module": ["torch.Tensor", "autograd", "nn.Module"],
    "manual backprop": ["Gradients by hand", "chain rule"],
    "requires_grad": ["requires_grad=True"],
    "backward accumulation": ["accumulat"],
    "graph freed": ["retain_graph"],
    "no_grad": ["torch.no_grad"],
    "zero_grad": ["zero_grad"],
    "computational graph figure": ["grad_fn", "next_functions"],
    "custom autograd Function": ["torch.autograd.Function", "save_for_backward", "gradcheck"],
    "nn.Sequential": ["nn.Sequential"],
    "loss functions": ["mse_loss", "cross_entropy"],
    "optimizers": ["torch.optim.SGD", "torch.optim.Adam"],
    "custom Module": ["super().__init__()", "GatedBlock"],
    "DataLoader": ["DataLoader", "collate_fn"],
    "static vs dynamic graphs": ["dynamic graph", "static graph", "TorchScript", "torch.compile", "torch.export"],
    "TensorFlow": ["TensorFlow"],
}


def missing_terms(chapter: str, checklist: dict[str, list[str]]) -> dict[str, list[str]]:
    """Checklist words not found (case-insensitive) in the text of a chapter's built pages."""
    import html as html_lib

    text = " ".join(p.read_text() for p in (HTML / chapter).glob("*.html"))
    text = html_lib.unescape(re.sub(r"<[^>]+>", "", text)).lower()
    missing = {item: [w for w in words if w.lower() not in text] for item, words in checklist.items()}
    return {k: v for k, v in missing.items() if v}


def test_chapter_12_covers_the_lecture_checklist():
    assert not missing_terms("ch12", L12_CHECKLIST)


def test_book_notebooks_are_in_sync_with_their_sources():
    proc = subprocess.run([sys.executable, str(ROOT / "book" / "_ext" / "sync_sources.py"), "--check"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout
    assert len(list((ROOT / "book" / "_src").rglob("*.md"))) >= 6


L13_CHECKLIST = {
    "CV tasks": ["classification", "semantic segmentation", "object detection", "instance segmentation"],
    "transfer learning": ["feature extraction", "fine-tuning", "very little data", "very different dataset"],
    "detection outputs and boxes": ["category label", "xywh", "cxcywh", "oriented boxes"],
    "modal vs amodal": ["modal", "amodal"],
    "IoU and thresholds": ["intersection over union", "IoU = ", "0.5", "0.7", "0.9"],
    "single-object multitask loss": ["multitask loss", "lambda"],
    "sliding windows": ["sliding window", "(H+1)"],
    "region proposals / selective search": ["region proposal", "selective search", "felzenszwalb"],
    "R-CNN": ["R-CNN", "warp", "224", "t_x"],
    "training labels": ["positive", "negative", "neutral"],
    "NMS and crowded scenes": ["non-maximum suppression", "crowded"],
    "mAP": ["precision", "recall", "average precision", "COCO mAP", "0.95"],
}


def test_chapter_13_covers_the_lecture_checklist():
    assert not missing_terms("ch13", L13_CHECKLIST)


# COURSE_SPEC §9, Lecture 14: part 1 (two-stage detectors and FPN) and part 2 (single-stage detectors).
L14_CHECKLIST = {
    "Fast R-CNN: backbone + per-region network": ["Fast R-CNN", "backbone", "per-region network", "once per image"],
    "projecting boxes to features": ["spatial_scale", "stride", "receptive field"],
    "RoI Pool (snapping) vs RoI Align (bilinear)": ["RoI Pool", "snap", "RoI Align", "bilinear interpolation", "sampling_ratio", "misalign"],
    "speed: R-CNN vs Fast R-CNN vs Faster R-CNN": ["R-CNN", "Fast R-CNN", "Faster R-CNN", "selective search", "perf_counter"],
    "RPN with K anchors per location": ["region proposal network", "anchor", "K = 9", "aspect ratio", "objectness", "AnchorGenerator"],
    "the four losses": ["loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg", "smooth", "cross-entropy"],
    "two-stage vs single-stage": ["two-stage", "single-stage"],
    "image pyramid vs multi-scale features vs FPN": ["image pyramid", "multi-scale features", "feature pyramid network", "top-down", "lateral", "LevelMapper"],
    "RetinaNet, class imbalance, focal loss": ["RetinaNet", "class imbalance", "类别不平衡", "focal loss", "焦点损失", "easy negative",
                                               "(1 - p_t)^{\\gamma}", "alpha_t", "sigmoid_focal_loss", "prior_probability", "BCEClassificationHead", "AP50"],
    "FCOS: anchor-free, ltrb, centerness": ["FCOS", "anchor-free", "无锚框", "(l, t, r, b)", "center-inside rule", "max(l, t, r, b)",
                                            "centerness", "中心度", "\\sqrt{\\frac{\\min(l, r)}{\\max(l, r)}", "center_sampling_radius"],
    "two-stage vs single-stage, measured": ["Faster R-CNN", "RetinaNet", "FCOS", "ms/step", "training time"],
}


def test_chapter_14_covers_the_lecture_checklist():
    assert not missing_terms("ch14", L14_CHECKLIST)


# COURSE_SPEC §9, Lecture 15: segmentation, upsampling, transposed convolution, Mask R-CNN and per-region heads.
L15_CHECKLIST = {
    "semantic segmentation": ["semantic segmentation", "语义分割", "every pixel"],
    "sliding window vs fully convolutional": ["sliding window", "fully convolutional network", "全卷积网络", "multiply-adds"],
    "downsampling/upsampling": ["downsampling", "upsampling", "上采样", "encoder-decoder", "skip connection"],
    "nearest, bed of nails, max unpooling": ["nearest neighbour", "bed of nails", "max unpooling", "return_indices=True", "max_unpool2d"],
    "bilinear, bicubic": ["bilinear", "bicubic", "align_corners=True", "align_corners=False"],
    "transposed convolution": ["transposed convolution", "转置卷积", "conv_transpose1d", "conv_transpose2d", "output_padding", "checkerboard"],
    "as a matrix, 1-D example": ["[a, b]", "[x, y, z]", "a*z + b*x", "C.T @ y", "conv(x) == C @ x"],
    "FCN trained, mIoU": ["mIoU", "confusion matrix", "IoU"],
    "instance segmentation": ["instance segmentation", "实例分割"],
    "Mask R-CNN": ["Mask R-CNN", "roi_align", "14×14", "28×28", "paste_masks_in_image", "project_masks_on_boxes", "ground-truth class"],
    "panoptic segmentation": ["panoptic segmentation", "全景分割", "things", "stuff", "panoptic quality"],
    "keypoint estimation": ["keypoint", "heatmap", "keypoints_to_heatmap", "heatmaps_to_keypoints", "关键点"],
    "per-region heads": ["per-region heads", "dense captioning", "密集字幕", "3D shape", "Mesh R-CNN"],
}


def test_chapter_15_covers_the_lecture_checklist():
    assert not missing_terms("ch15", L15_CHECKLIST)
