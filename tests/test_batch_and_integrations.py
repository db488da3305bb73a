"""TA workflows: grade-batch (CSV, resume, parallel), nbgrader gradebook, Gradescope, determinism."""
import csv
import json
import os
import shutil
import subprocess
import sys
import zipfile

import nbformat
import pytest

from autograder.results import validate
from conftest import ROOT, release_nb, solution_nb, with_cells
from test_grading_a1 import MUTANTS, _mutate, _sol

A1 = "a1_pytorch"


def mutant(name):
    changes, _ = MUTANTS[name]
    return with_cells(solution_nb(A1), {gid: _mutate(_sol(gid), old, new) for gid, (old, new) in changes.items()})


def run_cli(*args, cwd, timeout=1800):
    proc = subprocess.run([sys.executable, "-m", "autograder", *args], capture_output=True, text=True, cwd=cwd, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def expected_scores(tmp_path_factory):
    """Scores of the distinct variants, each graded once directly."""
    from autograder.runner import grade

    folder = tmp_path_factory.mktemp("variants")
    variants = {"solution": solution_nb(A1), "release": release_nb(A1), "subtle1": mutant("subtle-1"), "subtle2": mutant("subtle-2")}
    scores = {}
    for name, nb in variants.items():
        path = folder / f"{name}.ipynb"
        nbformat.write(nb, path)
        scores[name] = grade(A1, path).score
    return variants, scores


# Every kind of submission (solution, release, two mutants, garbage, zipped) twice, as nbgrader folders, loose files and zips.
N_SUBMISSIONS = 12


@pytest.mark.slow
def test_grade_batch_with_csv_resume_and_gradebook(tmp_path, expected_scores):
    variants, scores = expected_scores
    subs = tmp_path / "submissions"
    subs.mkdir()
    expected = {}
    kinds = list(variants) + ["garbage", "zipped"]
    for i in range(N_SUBMISSIONS):
        kind = kinds[i % len(kinds)]
        sid = f"student{i:02d}"
        if kind == "garbage":
            (subs / f"{sid}.ipynb").write_bytes(os.urandom(2000))
            expected[sid] = (0, "not graded")
        elif kind == "zipped":
            with zipfile.ZipFile(subs / f"{sid}.zip", "w") as zf:
                zf.writestr(f"{A1}.ipynb", nbformat.writes(variants["solution"]))
            expected[sid] = (100, "graded")
        else:
            folder = subs / sid / A1  # nbgrader's submitted/<student>/<assignment>/ layout for some
            target = folder / f"{A1}.ipynb" if i % 2 else subs / f"{sid}_{A1}_submission.ipynb"
            target.parent.mkdir(parents=True, exist_ok=True)
            nbformat.write(variants[kind], target)
            expected[sid] = (scores[kind], "graded")
    grades = tmp_path / "grades.csv"
    db = tmp_path / "gradebook.db"
    proc = run_cli("grade-batch", "--assignment", A1, str(subs), "--jobs", "2", "--csv", str(grades), "--gradebook", "--gradebook-db", str(db), cwd=tmp_path)
    assert "grading a1_pytorch" in proc.stderr and f"{N_SUBMISSIONS}/{N_SUBMISSIONS}" in proc.stderr  # the tqdm bar
    rows = {r["student_id"]: r for r in csv.DictReader(open(grades))}
    assert sorted(rows) == sorted(expected)
    for sid, (score, status) in expected.items():
        assert float(rows[sid]["score"]) == score, (sid, rows[sid])
        assert rows[sid]["status"].startswith(status), rows[sid]["status"]
        per_test = [float(v) for k, v in rows[sid].items() if k.startswith("test_") and v != ""]
        assert sum(per_test) == score
    print(next(line for line in proc.stdout.splitlines() if "submissions/min" in line))  # throughput, for the record

    # resumable: nothing to grade again; --force regrades
    again = run_cli("grade-batch", "--assignment", A1, str(subs), "--csv", str(grades), cwd=tmp_path)
    assert f"{N_SUBMISSIONS} already graded, 0 to grade" in again.stdout

    # the nbgrader gradebook has every student, and `nbgrader export` writes them
    from autograder.gradebook import scores as gradebook_scores

    recorded = gradebook_scores(db, A1)
    assert recorded == {sid: float(score) for sid, (score, _) in expected.items()}
    env = dict(os.environ, PATH=f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}")
    subprocess.run([sys.executable, "-m", "nbgrader", "export", f"--CourseDirectory.db_url=sqlite:///{db}", f"--CourseDirectory.root={tmp_path}"],
                   cwd=tmp_path, check=True, capture_output=True, env=env)
    exported = {r["student_id"]: float(r["score"]) for r in csv.DictReader(open(tmp_path / "grades.csv"))}
    assert exported == recorded


def test_grade_batch_survives_a_bad_submission_and_resumes(tmp_path):
    subs = tmp_path / "subs"
    subs.mkdir()
    nbformat.write(release_nb(A1), subs / "ann.ipynb")
    (subs / "ben.ipynb").write_text("{not json")
    grades = tmp_path / "g.csv"
    run_cli("grade-batch", "--assignment", A1, str(subs), "--csv", str(grades), cwd=tmp_path)
    rows = {r["student_id"]: r for r in csv.DictReader(open(grades))}
    assert rows["ann"]["score"] == "0" and rows["ann"]["status"] == "graded"
    assert rows["ben"]["status"].startswith("not graded")
    forced = run_cli("grade-batch", "--assignment", A1, str(subs), "--csv", str(grades), "--force", cwd=tmp_path)
    assert "0 already graded, 2 to grade" in forced.stdout


def test_student_ids_from_file_names(tmp_path):
    from autograder.batch import student_id

    for name, sid in [("alice.ipynb", "alice"), ("bob_a1_pytorch_submission.ipynb", "bob"), ("c-d_submission.zip", "c-d"), ("x_a1_pytorch.py", "x")]:
        assert student_id(tmp_path / name, tmp_path, A1) == sid
    assert student_id(tmp_path / "eve" / A1 / "whatever.ipynb", tmp_path, A1) == "eve"


def test_gradescope_bundle_runs_like_on_gradescope(tmp_path):
    from autograder.bundle import build_bundle

    bundle = build_bundle(A1, tmp_path / "autograder.zip")
    root = tmp_path / "autograder"
    (root / "source").mkdir(parents=True)
    with zipfile.ZipFile(bundle) as zf:
        zf.extractall(root / "source")
    for script in ("setup.sh", "run_autograder"):
        path = root / "source" / script
        path.chmod(0o755)
        subprocess.run(["bash", "-n", str(path)], check=True)
    assert "requirements-lock.txt" in (root / "source" / "setup.sh").read_text()
    env = dict(os.environ, GRADESCOPE_ROOT=str(root), GRADER_PYTHON=sys.executable)
    for name, nb, score in [("solution", solution_nb(A1), 100), ("release", release_nb(A1), 0), ("nothing", None, 0)]:
        shutil.rmtree(root / "submission", ignore_errors=True)
        shutil.rmtree(root / "results", ignore_errors=True)
        (root / "submission").mkdir()
        if nb is not None:
            nbformat.write(nb, root / "submission" / f"{A1}.ipynb")
        subprocess.run(["bash", str(root / "source" / "run_autograder")], cwd=root / "source", env=env, check=True, capture_output=True, timeout=600)
        data = json.loads((root / "results" / "results.json").read_text())
        validate(data)
        assert data["score"] == score, (name, data["output"])
    assert "no such file" in data["output"]


@pytest.mark.parametrize("variant", ["solution", "subtle-2"])
def test_grading_is_deterministic(grade, variant):
    nb = solution_nb(A1) if variant == "solution" else mutant(variant)
    first, second = grade(nb).to_gradescope(), grade(nb).to_gradescope()
    for r in (first, second):
        r.pop("execution_time")
    assert first == second
