"""The class report (`python -m autograder report`): generated results for 1 and 1000 students, a page that
opens cleanly in headless Chromium, hostile student ids, and (slow) a real batch graded end to end."""
from __future__ import annotations

import functools
import http.server
import json
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import nbformat
import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
from ta_demo import generated_results, notebook_with, rename_locals, solution_cells  # noqa: E402

from autograder import assignments  # noqa: E402
from autograder.report import write_report  # noqa: E402

FIGURES = ("scores.png", "failed_tests.png", "parts.png", "grading_time.png")


def student_rows(index: Path) -> list[str]:
    """The student ids of the page's "Every student" table."""
    text = index.read_text()
    section = text[text.index('id="students"'):]
    return re.findall(r"<tr><td>([^<]*)</td>", section)


def figure_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as image:
        return image.size


@pytest.mark.parametrize("n", [1, 1000])
def test_report_on_generated_results_lists_every_student_with_figures(tmp_path, n):
    students = generated_results(tmp_path, n, not_notebooks=min(n - 1, 20), crashed=min(n - 1, 5))
    index = write_report(tmp_path)
    assert index == tmp_path / "_grading" / "report" / "index.html"
    assert student_rows(index) == students
    for name in FIGURES:
        w, h = figure_size(index.parent / name)
        assert w >= 600 and h >= 250, (name, w, h)
        assert f'src="{name}"' in index.read_text()
    text = index.read_text()
    # every test of the suite in the table, with the share of students failing it
    assert text.count("<tr><td>test_") == 42
    if n == 1000:
        problems = text[text.index('id="problems"'):text.index('id="figures"')]
        assert problems.count("<tr>") == 1 + 20 + 5  # header, not notebooks, crashed
        assert "not a notebook" in problems and "the grader crashed" in problems
        for link in re.findall(r'href="(logs/[^"]+)"', problems):
            assert (index.parent / link).is_file()


def test_report_parts_and_failures_match_the_results(tmp_path):
    """The numbers behind the figures: points per part add up to the score, the most common message is the one seen most."""
    from autograder.report import failure_shares, load, part_points, parts_of_tests

    generated_results(tmp_path, 40, not_notebooks=0, crashed=0, seed=3)
    subs = load(tmp_path / "_grading")
    a = assignments.get("a1_pytorch")
    points = part_points(subs, list(a.parts), parts_of_tests(a.id))
    for k, s in enumerate(subs):
        assert sum(points[p.cell][k] for p in a.parts) == pytest.approx(s.score)
    rows = failure_shares(subs)
    assert [r["share"] for r in rows] == sorted((r["share"] for r in rows), reverse=True)
    worst = rows[0]
    failed = [t for s in subs for t in s.tests if t["name"].startswith(worst["test"] + ":") and t["status"] != "passed"]
    assert worst["failed"] == len(failed) > 0
    assert worst["message_count"] > len(failed) / 2  # each generated test fails with one kind of message


def test_report_infers_the_assignment_and_escapes_what_students_control(tmp_path):
    generated_results(tmp_path, 3, not_notebooks=0, crashed=0)
    grading = tmp_path / "_grading"
    hostile = '<img src=x onerror="alert(1)">'
    shutil.copy(grading / "student0000.json", grading / f"{hostile}.json")
    data = json.loads((grading / "student0001.json").read_text())
    data["tests"][0].update(status="failed", score=0, output="<script>alert(2)</script> differs")
    (grading / "student0001.json").write_text(json.dumps(data))
    (grading / "broken.json").write_text("{not json")
    index = write_report(tmp_path, tmp_path / "out")  # no --assignment: found from the test names
    text = index.read_text()
    assert "a1_pytorch" in text
    assert "<img src=x" not in text and "<script>" not in text
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in text
    assert "broken" in student_rows(index) and "unreadable results file" in text


def test_report_cli_says_what_to_do_without_results(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "autograder", "report", str(tmp_path)], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2
    assert "run `python -m autograder grade-batch" in proc.stderr


# ----------------------------------------------------------------------------- in a browser
def problems_in_browser(browser, directory: Path, screenshot: Path | None = None) -> tuple[list[str], dict]:
    """Serve ``directory``, open its index.html and every link in it; return the problems (console errors, 4xx,
    images that did not load) and what the page holds."""
    not_found: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_request(self, code="-", size="-"):
            if str(getattr(code, "value", code)).startswith("4"):
                not_found.append(f"HTTP {getattr(code, 'value', code)} for {self.path}")

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(directory)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    problems: list[str] = []
    try:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("console", lambda msg: msg.type == "error" and problems.append(f"console error: {msg.text}"))
        page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
        page.on("response", lambda r: r.status >= 400 and problems.append(f"HTTP {r.status} for {r.url}"))
        response = page.goto(f"{base}/index.html", wait_until="networkidle")
        if response is None or response.status != 200:
            problems.append("index.html did not load")
        info = page.evaluate("""() => ({
            imgs: [...document.images].map(i => ({src: i.getAttribute('src'), ok: i.complete && i.naturalWidth > 0, w: i.naturalWidth})),
            links: [...document.querySelectorAll('a[href]')].map(a => a.getAttribute('href')),
            marks: document.querySelectorAll('mark').length})""")
        problems += [f"image not loaded: {i['src']}" for i in info["imgs"] if not i["ok"]]
        if screenshot is not None:
            page.screenshot(path=str(screenshot), full_page=False)
        for href in info["links"]:
            if href.startswith("#"):
                if not page.query_selector(f"[id='{href[1:]}']"):
                    problems.append(f"broken anchor {href}")
                continue
            r = page.request.get(f"{base}/{href}")
            if r.status != 200:
                problems.append(f"link {href}: HTTP {r.status}")
        page.close()
    finally:
        httpd.shutdown()
    return problems + sorted(set(not_found)), info


def test_report_opens_cleanly_in_chromium(browser, tmp_path):
    generated_results(tmp_path, 30, not_notebooks=2, crashed=2)
    index = write_report(tmp_path)
    problems, info = problems_in_browser(browser, index.parent)
    assert not problems, "\n".join(problems)
    assert sorted(i["src"] for i in info["imgs"]) == sorted(FIGURES)
    assert len({href for href in info["links"] if href.startswith("logs/")}) == 30  # every student's log (the crashed ones too)


# ----------------------------------------------------------------------------- a real batch
def acceptance_folder(folder: Path, assignment_id: str = "a1_pytorch") -> None:
    """The issue's class: the solution, the untouched release, a disguised copy of the solution (local names
    renamed, comments removed), a partial submission (the first three parts) and a file that is not a notebook."""
    a = assignments.get(assignment_id)
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(a.solution_path, folder / "correct.ipynb")
    shutil.copy(a.release_path, folder / "release.ipynb")
    solution, release = solution_cells(a.id), a.release()
    nbformat.write(notebook_with(release, {gid: rename_locals(src, "q") for gid, src in solution.items()}), folder / "disguised.ipynb")
    nbformat.write(notebook_with(release, dict(list(solution.items())[:3])), folder / "partial.ipynb")
    (folder / "notanotebook.ipynb").write_text("my answers are in the PDF")


@pytest.mark.slow
def test_graded_batch_report_and_similarity_end_to_end(tmp_path):
    """grade-batch on the issue's class, then report and similarity through the CLI."""
    folder = tmp_path / "subs"
    acceptance_folder(folder)
    cli = [sys.executable, "-m", "autograder"]
    graded = subprocess.run([*cli, "grade-batch", "--assignment", "a1_pytorch", str(folder), "--jobs", "2", "--csv", str(tmp_path / "g.csv")],
                            capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert graded.returncode == 0, graded.stdout[-2000:] + graded.stderr[-2000:]
    report = subprocess.run([*cli, "report", str(folder)], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert report.returncode == 0, report.stderr
    index = folder / "_grading" / "report" / "index.html"
    assert student_rows(index) == ["correct", "disguised", "notanotebook", "partial", "release"]
    text = index.read_text()
    assert all(f'src="{name}"' in text and (index.parent / name).stat().st_size > 5000 for name in FIGURES)
    assert "correct</td><td class=\"num\">100 / 100" in text and "not a notebook" in text
    similar = subprocess.run([*cli, "similarity", "--assignment", "a1_pytorch", str(folder)], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert similar.returncode == 0, similar.stderr
    rows = (folder / "_grading" / "similarity" / "similarity.csv").read_text().splitlines()
    flags = {tuple(sorted(r.split(",")[:2])): r.split(",")[3] for r in rows[1:]}
    assert flags[("correct", "disguised")] == "yes"
    assert flags[("correct", "release")] == "no"
