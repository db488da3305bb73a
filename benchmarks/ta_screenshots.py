"""The README's pictures of the TA tools, rendered by headless Chromium (`make ta-screenshots`).

Builds a class report from generated results for 120 students (benchmarks/ta_demo.py) and a similarity page
for the issue's class (the solution, the release, a disguised copy, a partial submission, a file that is not
a notebook), opens both in Chromium and writes benchmarks/screenshots/ta_report.png, ta_report_figures.png,
ta_similarity.png and ta_similarity_pair.png. Nothing is drawn by hand: rerun it after changing the pages.
"""
from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from ta_demo import generated_results, notebook_with, rename_locals, solution_cells  # noqa: E402

from autograder import assignments  # noqa: E402
from autograder.report import write_report  # noqa: E402
from autograder.similarity import check_folder  # noqa: E402

OUT = HERE / "screenshots"
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"]
WIDTH = 1280


def issue_class(folder: Path, assignment_id: str = "a1_pytorch") -> None:
    a = assignments.get(assignment_id)
    folder.mkdir(parents=True)
    shutil.copy(a.solution_path, folder / "alice.ipynb")
    shutil.copy(a.release_path, folder / "bob.ipynb")
    solution = solution_cells(a.id)
    nbformat.write(notebook_with(a.release(), {g: rename_locals(s, "t") for g, s in solution.items()}), folder / "carol.ipynb")
    nbformat.write(notebook_with(a.release(), dict(list(solution.items())[:3])), folder / "dave.ipynb")
    (folder / "erin.ipynb").write_text("see attached PDF")


def shoot(page, index: Path, path: Path, anchor: str | None = None, height: int = 1000) -> None:
    page.goto(index.as_uri(), wait_until="load")
    top = 0.0
    if anchor:
        top = page.evaluate(f"() => document.getElementById('{anchor}').getBoundingClientRect().top + window.scrollY")
    page.screenshot(path=str(path), clip={"x": 0, "y": top, "width": WIDTH, "height": height}, full_page=True)
    print(f"wrote {path.relative_to(HERE.parent)}")


def main() -> int:
    if not Path(CHROMIUM).exists():
        print(f"{CHROMIUM} is missing: `make system-deps` installs Chromium (Debian, as root)", file=sys.stderr)
        return 2
    from playwright.sync_api import sync_playwright

    OUT.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        report_folder, class_folder = Path(tmp) / "report_demo", Path(tmp) / "submissions"
        generated_results(report_folder, 120, not_notebooks=3, crashed=2, seed=7)
        report = write_report(report_folder)
        issue_class(class_folder)
        _, similarity, matches = check_folder("a1_pytorch", class_folder)
        flagged = [m for m in matches if m.flagged]
        copy = next(i for i, m in enumerate(flagged) if {m.a.student, m.b.student} == {"alice", "carol"})  # the disguised copy
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page(viewport={"width": WIDTH, "height": 1000})
            shoot(page, report, OUT / "ta_report.png", height=900)
            shoot(page, report, OUT / "ta_report_figures.png", anchor="figures", height=1000)
            shoot(page, similarity, OUT / "ta_similarity.png", height=760)
            shoot(page, similarity, OUT / "ta_similarity_pair.png", anchor=f"pair{copy}", height=900)
            browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
