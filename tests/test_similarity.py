"""The similarity check (`python -m autograder similarity`): disguised copies are flagged (renamed names, no
comments, cells moved), the release's own code never counts, and independent correct implementations (the
alternatives the grading tests use) are not flagged."""
from __future__ import annotations

import csv
import io
import random
import subprocess
import sys
import tokenize

import nbformat
import numpy as np
import pytest

from conftest import ROOT, solution_source
from test_report import acceptance_folder, problems_in_browser

from ta_demo import notebook_with, rename_locals, solution_cells  # test_report put benchmarks/ on the path
from autograder import assignments
from autograder.similarity import THRESHOLD, Code, check_folder, compare, fingerprint, release_boilerplate

import test_grading_a2 as a2  # noqa: E402 - the alternatives the grading tests keep at full marks
import test_grading_a3 as a3  # noqa: E402
import test_grading_a4 as a4  # noqa: E402
import test_grading_a5 as a5  # noqa: E402


def flags(out_csv) -> dict[tuple[str, str], tuple[float, str]]:
    with open(out_csv) as f:
        rows = list(csv.DictReader(f))
    assert rows and list(rows[0]) == ["student_a", "student_b", "similarity", "flagged"]
    return {tuple(sorted((r["student_a"], r["student_b"]))): (float(r["similarity"]), r["flagged"]) for r in rows}


def test_issue_class_copy_flagged_release_not(tmp_path):
    acceptance_folder(tmp_path)
    out_csv, index, _ = check_folder("a1_pytorch", tmp_path)
    pairs = flags(out_csv)
    assert len(pairs) == 6  # 4 notebooks; the file that is not one is listed on the page instead
    assert pairs[("correct", "disguised")][1] == "yes" and pairs[("correct", "disguised")][0] > 0.95
    assert pairs[("correct", "release")] == (0.0, "no")
    assert pairs[("disguised", "release")] == (0.0, "no")
    text = index.read_text()
    assert "notanotebook" in text and "not a notebook" in text
    assert "<mark>" in text


def test_reordered_cells_renamed_names_and_no_comments_are_still_a_copy(tmp_path):
    a = assignments.get("a1_pytorch")
    solution = solution_cells(a.id)
    nb = notebook_with(a.release(), {gid: rename_locals(src, "zz") for gid, src in solution.items()})
    code = [c for c in nb.cells if c.cell_type == "code"]
    random.Random(1).shuffle(code)  # the graded cells in another order among the notebook's code cells
    nb.cells = [c for c in nb.cells if c.cell_type != "code"] + code
    nbformat.write(nb, tmp_path / "shuffled.ipynb")
    nbformat.write(nbformat.read(a.solution_path, as_version=4), tmp_path / "original.ipynb")
    disguised = [rename_locals(src, "zz") for src in solution.values()]
    assert not any(t.type == tokenize.COMMENT for src in disguised for t in tokenize.generate_tokens(io.StringIO(src).readline))
    assert sum(src.count("zz") for src in disguised) > 100
    pairs = flags(check_folder(a.id, tmp_path)[0])
    assert pairs[("original", "shuffled")][1] == "yes" and pairs[("original", "shuffled")][0] > 0.95


def test_release_code_does_not_count(tmp_path):
    """Two students who solved different parts share only the release's code: 0, however long that code is."""
    a = assignments.get("a1_pytorch")
    solution = solution_cells(a.id)
    gids = list(solution)
    nbformat.write(notebook_with(a.release(), {g: solution[g] for g in gids[:4]}), tmp_path / "first_half.ipynb")
    nbformat.write(notebook_with(a.release(), {g: solution[g] for g in gids[4:]}), tmp_path / "second_half.ipynb")
    pairs = flags(check_folder(a.id, tmp_path)[0])
    assert pairs[("first_half", "second_half")] == (0.0, "no")


def _solution_body(assignment_id: str, gid: str, function_start: str) -> str:
    source = solution_source(assignment_id, gid)
    start = source.index("    ### BEGIN SOLUTION\n", source.index(function_start)) + len("    ### BEGIN SOLUTION\n")
    return source[start:source.index("    ### END SOLUTION", start)]


# Correct implementations written independently of the solution (tests/test_grading_a*.py keep them at full
# marks). a3's ROI_ALIGN_GATHER is not here: its first half is the solution's code with other names.
INDEPENDENT = [
    ("a2_detection_basics", "evaluation", "def evaluate_detections(", a2.EVAL_LOOPS.split("\n", 1)[1]),
    ("a3_two_stage", "anchors", "def match_anchors(", a3.MATCH_LIKE_TORCHVISION),
    ("a3_two_stage", "anchors", "def sample_labels(", a3.SAMPLE_BY_RANDOM_KEYS),
    ("a4_one_stage", "focal_loss", "def sigmoid_focal_loss(", a4.FOCAL_FROM_LOGSIGMOID),
    ("a4_one_stage", "fcos_targets", "def fcos_assign_targets(", a4.ASSIGN_BY_SORTED_AREA),
    ("a4_one_stage", "fcos_losses", "def fcos_losses(", a4.LOSSES_BY_MASK),
    ("a5_segmentation", "upsampling", "def bilinear_upsample(", a5.BILINEAR_FOUR_CORNERS),
    ("a5_segmentation", "transposed_conv", "def conv_transpose2d(", a5.CONV_TRANSPOSE_BY_DILATION),
    ("a5_segmentation", "transposed_conv", "def conv2d_matrix(", a5.CONV_MATRIX_BY_LOOPS),
    ("a5_segmentation", "fcn", "def mean_iou(", a5.MIOU_PER_CLASS),
    ("a5_segmentation", "mask_rcnn", "def mask_iou(", a5.MASK_IOU_EINSUM),
]


@pytest.mark.parametrize("assignment_id, gid, function_start, alternative", INDEPENDENT, ids=[c[2][4:-1] for c in INDEPENDENT])
def test_independent_correct_implementations_are_not_flagged(assignment_id, gid, function_start, alternative):
    ours = _solution_body(assignment_id, gid, function_start)
    assert ours.strip() != alternative.strip()
    boilerplate = release_boilerplate(assignments.get(assignment_id).release())
    theirs, mine = Code("alternative", alternative, fingerprint(alternative, boilerplate)), Code("solution", ours, fingerprint(ours, boilerplate))
    match = compare(theirs, mine)
    assert not match.flagged and match.similarity < THRESHOLD - 0.1, match.similarity
    # ... while a disguised copy of the same function is all shared (flagged once long enough: a whole submission is)
    disguised = rename_locals("def f():\n" + ours, "w").split("\n", 1)[1]
    assert disguised != ours and compare(Code("copy", disguised, fingerprint(disguised, boilerplate)), mine).similarity > 0.95


def test_similarity_page_opens_cleanly_and_highlights_both_sides(browser, tmp_path):
    acceptance_folder(tmp_path)
    _, index, matches = check_folder("a1_pytorch", tmp_path, tmp_path / "report")
    problems, info = problems_in_browser(browser, index.parent)
    assert not problems, "\n".join(problems)
    assert info["imgs"] and info["marks"] >= 2
    copy = next(m for m in matches if {m.a.student, m.b.student} == {"correct", "disguised"})
    for text, slices in ((copy.a.text, copy.slices[0]), (copy.b.text, copy.slices[1])):
        covered = np.zeros(len(text), bool)
        for s, e in zip(*slices):
            covered[s:e] = True
        code_chars = np.array([not c.isspace() for c in text])
        assert covered[code_chars].mean() > 0.8  # most of the copied code is highlighted


def test_similarity_cli(tmp_path):
    acceptance_folder(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "autograder", "similarity", "--assignment", "a1_pytorch", str(tmp_path), "--out", str(tmp_path / "sim")],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "flagged" in proc.stdout and "correct  disguised" in proc.stdout
    assert (tmp_path / "sim" / "index.html").is_file() and (tmp_path / "sim" / "similarity.csv").is_file()
