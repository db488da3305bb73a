"""One manifest per assignment (autograder/manifests/<id>.toml) drives the grader, the Makefile,
the book and these tests; the manifest, the release notebook and the hidden suite must agree."""
import dataclasses
import importlib.util
import re
import subprocess
import sys

import pytest

from autograder import assignments, runner
from autograder.notebook import graded_cells
from conftest import ASSIGNMENT_IDS, ROOT, release_nb


def test_list_command_prints_the_released_assignments():
    out = subprocess.run([sys.executable, "-m", "autograder", "list"], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert out.split() == ASSIGNMENT_IDS == [a.id for a in assignments.all_assignments()]
    assert set(ASSIGNMENT_IDS) >= {"a1_pytorch", "a2_detection_basics"}
    everything = subprocess.run([sys.executable, "-m", "autograder", "list", "--all"], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert set(everything.split()) == {p.stem for p in assignments.MANIFESTS.glob("*.toml")}


@pytest.mark.parametrize("assignment_id", ASSIGNMENT_IDS)
def test_manifest_release_and_suite_agree(assignment_id):
    """The manifest's parts are the release's graded cells, in order; each part's hidden tests add up to its points,
    100 in all; the support modules the manifest names exist."""
    a = assignments.get(assignment_id)
    assert a.status == "released"
    assert [c.grade_id for c in graded_cells(release_nb(assignment_id))] == [p.cell for p in a.parts]
    assert a.total_points == 100
    tests = runner.collect(a)  # raises when a test has no part or a part's points do not add up
    assert {t.part for t in tests} == {p.cell for p in a.parts}
    for p in a.parts:
        assert sum(t.points for t in tests if t.part == p.cell) == p.points
    assert all(path.is_file() for path in a.support_paths), a.support


def sync_sources():
    """book/_ext/sync_sources.py, which writes the book's points from the manifests (a script, not a package)."""
    spec = importlib.util.spec_from_file_location("sync_sources", ROOT / "book" / "_ext" / "sync_sources.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def stated_points(page_text: str) -> dict[int, float]:
    """{part: points} of an assignment page's parts table."""
    sync = sync_sources()
    table = page_text.split(sync.POINTS_START)[1].split(sync.POINTS_END)[0]
    return {int(row[1]): float(row[3]) for row in map(sync.POINTS_ROW.fullmatch, table.strip().split("\n")[2:])}


@pytest.mark.parametrize("assignment_id", ASSIGNMENT_IDS)
def test_book_page_points_are_written_from_the_manifest(assignment_id):
    """The book page's parts table states the manifest's points (make book writes them; tests/test_book.py checks the
    committed page is what it writes): a changed manifest changes them, a row too many or too few is refused."""
    sync = sync_sources()
    a = assignments.get(assignment_id)
    page = (ROOT / "book" / "assignments" / f"{assignment_id}.md").read_text()
    committed = stated_points(page)
    assert sum(committed.values()) == a.total_points and list(committed) == list(range(1, len(committed) + 1))
    bumped = dataclasses.replace(a, parts=tuple(dataclasses.replace(p, points=p.points + 1) for p in a.parts))
    again = stated_points(sync.rendered_points_page(bumped))
    assert sum(again.values()) == a.total_points + len(a.parts) and all(again[n] > committed[n] for n in committed)
    last_row = page.split(sync.POINTS_END)[0].rstrip("\n").rsplit("\n", 1)[1]
    for broken in (page.replace(last_row + "\n", ""), page.replace(last_row, f"{last_row}\n| {len(committed) + 1} | more | 0 |")):
        with pytest.raises(sync.PageError, match="not the notebook's parts"):
            sync.rendered_points_page(a, broken)


@pytest.mark.parametrize("assignment_id", ASSIGNMENT_IDS)
def test_notebook_intro_states_the_manifest_points(assignment_id):
    """Where the notebook's introduction lists points per part, they are the manifest's."""
    intro = next(c.source for c in release_nb(assignment_id).cells if c.cell_type == "markdown")
    stated = [float(n) for n in re.findall(r"^\d+\. \*\*[^*]+\*\* \((\d+)(?: points)?\)", intro, flags=re.M)]
    if stated:  # a notebook section may hold several graded cells: consecutive parts add up to it
        points = [p.points for p in assignments.get(assignment_id).parts]
        for section in stated:
            taken = 0.0
            while taken < section and points:
                taken += points.pop(0)
            assert taken == section, f"the introduction says {stated}, the manifest's parts are {[p.points for p in assignments.get(assignment_id).parts]}"
        assert not points


def test_selected_parts_only_are_graded_and_unknown_parts_are_refused():
    a = assignments.get("a2_detection_basics")
    selected = runner.collect(a, parts=["nms"])
    assert selected and {t.part for t in selected} == {"nms"} and sum(t.points for t in selected) == a.part("nms").points
    with pytest.raises(ValueError, match="no parts"):
        runner.collect(a, parts=["not_a_part"])


def test_a_half_written_assignment_does_not_break_the_course(tmp_path, monkeypatch):
    """A draft (solution started, no hidden tests yet) is known but not listed, released or bundled."""
    for p in assignments.MANIFESTS.glob("*.toml"):
        (tmp_path / p.name).write_text(p.read_text())
    (tmp_path / "a9_draft.toml").write_text('title = "Draft"\nlecture = "15"\nstatus = "draft"\nsupport = ["worker_support/common.py"]\nparts = []\n')
    monkeypatch.setattr(assignments, "MANIFESTS", tmp_path)
    assignments._all.cache_clear()
    try:
        assert "a9_draft" not in assignments.known_ids()
        assert "a9_draft" in assignments.known_ids(include_drafts=True)
        assert assignments.get("a9_draft").status == "draft"
        with pytest.raises(assignments.UnknownAssignment, match="known:"):
            assignments.get("a0_missing")
        from autograder.bundle import build_bundle

        with pytest.raises(ValueError, match="not released"):
            build_bundle("a9_draft", tmp_path / "x.zip")
    finally:
        assignments._all.cache_clear()


def test_broken_manifest_fails_with_its_name(tmp_path, monkeypatch):
    (tmp_path / "a8_bad.toml").write_text('title = "Bad"\nlecture = "1"\nstatus = "shipped"\nparts = []\n')
    monkeypatch.setattr(assignments, "MANIFESTS", tmp_path)
    assignments._all.cache_clear()
    try:
        with pytest.raises(ValueError, match="a8_bad.toml: status"):
            assignments.known_ids()
    finally:
        assignments._all.cache_clear()


def test_suites_are_packages_and_load_together():
    """Each suite is its own package: two suites in one process never clash on module names."""
    for a in assignments.all_assignments():
        assert (a.tests_dir / "__init__.py").is_file()
    for a in assignments.all_assignments() * 2:  # collected one after the other in this process
        assert runner.collect(a)
