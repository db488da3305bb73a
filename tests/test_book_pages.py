"""The built book as readers meet it: chapter numbers, admonitions, citations, submission details.

`make test` builds the book (cached) before running the suite; these tests read book/_build/html.
"""
from __future__ import annotations

import html as html_lib
import re

import pytest

from conftest import ASSIGNMENT_IDS, ROOT
from lecture_utils import config

HTML = ROOT / "book" / "_build" / "html"


def page(rel: str) -> str:
    path = HTML / rel
    if not path.exists():
        pytest.fail(f"{path} is missing: run `make book` (make test builds it first)")
    return path.read_text()


def text_of(fragment: str) -> str:
    return html_lib.unescape(re.sub(r"<[^>]+>", "", fragment))


def section_numbers(rel: str) -> list[str]:
    return re.findall(r'<span class="section-number">([\d.]+)\s*</span>', page(rel))


@pytest.mark.parametrize("rel, number", [("ch12/index.html", "12."), ("ch12/tensors_autograd.html", "12.1."),
                                         ("ch13/index.html", "13."), ("ch13/nms_map.html", "13.5."),
                                         ("ch14/index.html", "14."), ("ch15/index.html", "15."),
                                         ("ch15/panoptic_keypoints.html", "15.6.")])
def test_chapters_are_numbered_by_lecture(rel, number):
    assert section_numbers(rel)[0] == number, f"{rel}: headings numbered {section_numbers(rel)[:3]}"


def test_the_sidebar_numbers_chapters_by_lecture():
    sidebar = text_of(page("intro.html"))
    for number, title in [("12.", "Deep Learning Software"), ("13.", "Object Detection"), ("14.", "Object Detectors"), ("15.", "Image Segmentation")]:
        assert re.search(rf"{re.escape(number)}\s*{title}", sidebar), f"sidebar lacks '{number} {title}'"
    assert not re.search(r"(?<![\d.])1\.\s*Deep Learning Software", sidebar)


CHAPTER_PAGES = {"ch15": ["semantic_fcn", "upsampling", "transposed_conv", "fcn_shapes", "instance_mask_rcnn", "panoptic_keypoints"]}


@pytest.mark.parametrize("chapter", sorted(CHAPTER_PAGES))  # complete chapters: the index links every page
def test_chapter_index_lists_every_page(chapter):
    text = page(f"{chapter}/index.html")
    assert "Coming later" not in text_of(text), f"{chapter}: still a placeholder"
    for name in CHAPTER_PAGES[chapter]:
        assert f'href="{name}.html"' in text, f"{chapter}/index does not link {name}"
        assert section_numbers(f"{chapter}/{name}.html"), f"{chapter}/{name} is not numbered"


AUTHOR_YEAR = re.compile(r"^[A-Z][^\[\],]+(?: et al\.| and [^\[\],]+)?, (?:\d{4}|n\.d\.)[a-z]?$")


def bibliography_labels() -> list[str]:
    labels = re.findall(r'<span class="label"><span class="fn-bracket">\[</span>(.*?)<span class="fn-bracket">\]</span></span>', page("bibliography.html"))
    return [text_of(label) for label in labels]


def test_bibliography_uses_author_year_labels():
    labels = bibliography_labels()
    assert len(labels) >= 20
    bad = [label for label in labels if not AUTHOR_YEAR.match(label)]
    assert not bad, f"labels that are not author-year: {bad}"
    assert len(set(labels)) == len(labels), "two entries share a label"
    assert "Lin et al., 2017a" in labels and "Dollar" not in " ".join(labels)


def test_citations_in_the_text_use_the_labels_of_the_list():
    labels = set(bibliography_labels())
    cited = []
    for path in sorted(HTML.rglob("*.html")):
        if path.relative_to(HTML).parts[0].startswith("_"):
            continue
        for span in re.findall(r'<span class="bibtex-citation"[^>]*>(.*?)</span>', path.read_text(), re.S):
            cited.append((path.relative_to(HTML).as_posix(), text_of(span)))
    assert len(cited) >= 15
    problems = []
    for where, citation in cited:
        inner = citation.strip()
        if not (inner.startswith("[") and inner.endswith("]")):
            problems.append(f"{where}: {citation!r} is not bracketed like the list")
            continue
        for label in inner[1:-1].split("; "):
            if label not in labels:
                problems.append(f"{where}: {label!r} is not a label of the bibliography")
    assert not problems, "\n".join(problems[:20])


@pytest.mark.parametrize("assignment", ASSIGNMENT_IDS)
def test_assignment_pages_say_where_and_by_when_to_submit(assignment):
    assert assignment in config.DUE_DATES, f"lecture_utils/config.py DUE_DATES has no due date for {assignment}"
    text = page(f"assignments/{assignment}.html")
    assert f'href="{config.SUBMISSION_URL}"' in text
    plain = text_of(text)
    assert config.DUE_DATES[assignment] in plain
    assert f"{assignment}_submission.ipynb" in plain


@pytest.mark.parametrize("assignment", ASSIGNMENT_IDS)
def test_assignment_download_button_gives_the_notebook(assignment):
    text = page(f"assignments/{assignment}.html")
    group = re.search(r'aria-label="Download[^"]*".*?</ul>', text, re.S)
    assert group, "no download button on the assignment page"
    links = re.findall(r'href="([^"]+)"', group[0])
    assert f"{assignment}/{assignment}.ipynb" in " ".join(links), f"download button links {links}"
    assert not any("_sources/" in link for link in links), f"download button still offers the page source: {links}"
    served = HTML / "assignments" / assignment / f"{assignment}.ipynb"
    assert served.read_bytes() == (ROOT / "assignments" / assignment / f"{assignment}.ipynb").read_bytes()


def test_export_cell_says_where_and_by_when_to_submit(tmp_path, capsys):
    from lecture_utils import submit

    assignment = ASSIGNMENT_IDS[0]
    notebook = tmp_path / f"{assignment}.ipynb"
    notebook.write_bytes((ROOT / "assignments" / assignment / f"{assignment}.ipynb").read_bytes())
    report = submit.export(notebook, run_checks=False)
    printed = capsys.readouterr().out
    for shown in (printed, str(report)):
        assert config.SUBMISSION_URL in shown and config.DUE_DATES[assignment] in shown


def test_assignments_table_fits_its_column():
    text = page("assignments/index.html")
    assert re.search(r'<table class="[^"]*assignments-table', text), "assignments table lost its class"
    assert "course.css" in text, "book/_static/course.css is not included"


# The trained tests' bars, read from the hidden tests (the one place they are set); each assignment page states them.
TRAINED_BARS = [("a3_two_stage", "a3_two_stage/test_part6_faster_rcnn.py", "AP50_BAR"),
                ("a4_one_stage", "a4_one_stage/test_part5_fcos.py", "AP50_BAR"),
                ("a5_segmentation", "a5_segmentation/test_part3_fcn.py", "MIOU_BAR"),
                ("a5_segmentation", "a5_segmentation/test_part4_mask_rcnn.py", "AP50_BAR")]


@pytest.mark.parametrize("assignment, test_file, name", TRAINED_BARS)
def test_assignment_pages_state_the_trained_test_bars(assignment, test_file, name):
    source = (ROOT / "autograder" / "hidden_tests" / test_file).read_text()
    bar = re.search(rf"^{name}\b[^=]*=\s*([\d.]+)", source, re.M)
    assert bar, f"{test_file} no longer sets {name}"
    plain = text_of(page(f"assignments/{assignment}.html"))
    assert re.search(rf"(?<![\d.]){re.escape(bar[1])}(?![\d])", plain), f"{assignment}'s page does not state the bar {bar[1]} of {test_file}"


# Terms the chapter 14-15 pages introduce with their Chinese name; each has a glossary entry (EN and 中文).
GLOSSARY_TERMS_14_15 = {"objectness": "物体性", "lateral connection": "横向连接", "multi-scale features": "多尺度特征",
                        "classification subnet": "分类子网络", "box subnet": "边界框回归子网络", "binary cross-entropy": "二元交叉熵",
                        "hard negative mining": "难负例挖掘", "online hard example mining": "在线难例挖掘",
                        "smooth L1 loss": "平滑 L1 损失", "center-inside rule": "中心点落在框内", "segmentation mask": "分割掩码",
                        "nearest-neighbour upsampling": "最近邻", "Jacobian": "雅可比矩阵", "confusion matrix": "混淆矩阵",
                        "panoptic quality": "全景质量", "per-region head": "逐区域任务头", "skip connection": "跳跃连接"}


def glossary_entries() -> dict[str, str]:
    entries = re.findall(r'<dt id="term-[^"]*">(.*?)</dt>\s*<dd>(.*?)</dd>', page("glossary.html"), re.S)
    return {text_of(re.sub(r'<a class="headerlink".*?</a>', '', term)).strip().lower(): text_of(body) for term, body in entries}


@pytest.mark.parametrize("term, chinese", sorted(GLOSSARY_TERMS_14_15.items()))
def test_glossary_has_the_chapter_14_15_terms(term, chinese):
    entries = glossary_entries()
    assert term.lower() in entries, f"no glossary entry for {term!r}"
    assert entries[term.lower()].lstrip().startswith(chinese), f"{term}: the entry does not start with {chinese}"


def test_glossary_intro_shows_no_markup_and_links_the_index():
    glossary = page("glossary.html")
    intro = text_of(glossary.split('<dl class="simple glossary">')[0].split("</h1>")[-1]) if "</h1>" in glossary else ""
    assert intro and "{term}" not in intro and "{" not in intro, intro[:300]
    for rel in ("glossary.html", "intro.html"):
        assert 'href="genindex.html"' in page(rel), f"{rel} does not link the index"
    assert "Course CJK" in (HTML / "_static" / "course.css").read_text()


def test_chapter_pages_show_no_stray_outputs():
    for path in sorted((HTML / "ch14").glob("*.html")) + sorted((HTML / "ch15").glob("*.html")):
        text = text_of(path.read_text())
        assert "<torch._C.Generator" not in text, f"{path.name} prints a torch.Generator"
