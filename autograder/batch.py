"""Grade a folder of submissions: parallel, resumable, one CSV row per student.

Each submission is graded by its own ``python -m autograder grade`` process, so a submission that
breaks anything breaks only its own row. Results and logs go to ``<DIR>/_grading/`` by default:

    _grading/<student>.json   Gradescope results (the CSV is rebuilt from these)
    _grading/<student>.log    what the grader printed for that submission

Submissions graded side by side must not slow each other down: each job has CPU cores of its own
(``job_cpus``: the grader and its worker are pinned there), and where cgroups are writable every
worker also has its own CPU quota, task count and memory limit (``autograder.sandbox``).

Student ids come from the file name (``alice.ipynb`` -> ``alice``; a trailing ``_<assignment>`` or
``_submission`` is removed) or, for nbgrader's ``submitted/<student>/<assignment>/`` layout and
Gradescope exports, from the student's folder.
"""
from __future__ import annotations

import csv
import json
import os
import queue
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from autograder import sandbox

SUFFIXES = (".ipynb", ".zip", ".py")
PEAK_MEMORY_GIB = 1.5  # measured: grader process + worker on a1, about 0.9 GiB; with margin


@dataclass
class Row:
    student: str
    file: Path
    score: float = 0.0
    max_score: float = 0.0
    status: str = "graded"
    tests: dict[str, float] | None = None


def student_id(path: Path, folder: Path, assignment_id: str) -> str:
    rel = path.relative_to(folder)
    if len(rel.parts) > 1:  # <student>/<file> or <student>/<assignment>/<file>
        return rel.parts[0]
    stem = path.stem
    pattern = re.compile(rf"[_-]({re.escape(assignment_id)}|submission)$")
    while pattern.search(stem) and pattern.sub("", stem):
        stem = pattern.sub("", stem)
    return stem


def find_submissions(folder: Path, assignment_id: str, out_dir: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(folder.rglob("*")):
        if path.suffix in SUFFIXES and path.is_file() and out_dir not in path.parents and ".ipynb_checkpoints" not in path.parts:
            sid = student_id(path, folder, assignment_id)
            if sid in found:  # several files for one student: the newest wins
                if path.stat().st_mtime <= found[sid].stat().st_mtime:
                    continue
            found[sid] = path
    return found


def memory_budget_gib() -> float:
    try:
        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        return 0.75 * pages * page_size / 2**30
    except (ValueError, OSError):
        return 8.0


def job_cpus(slot: int, jobs: int) -> set[int]:
    """The CPU cores of job ``slot`` out of ``jobs``: an equal share of the cores this process may use."""
    cores = sorted(os.sched_getaffinity(0))
    if jobs >= len(cores):
        return {cores[slot % len(cores)]}
    return set(cores[slot * len(cores) // jobs:(slot + 1) * len(cores) // jobs])


def grade_one(assignment_id: str, sid: str, path: Path, out_dir: Path, timeout_s: float, cpus: set[int] | None = None) -> Row:
    """Grade one submission in its own ``grade`` process (pinned to ``cpus``); never raises for the submission."""
    result_path, log_path = out_dir / f"{sid}.json", out_dir / f"{sid}.log"
    cmd = [sys.executable, "-m", "autograder", "grade", "--assignment", assignment_id, str(path), "--out", str(result_path)]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        if cpus:
            try:  # inherited by the worker and all it starts (before any student code runs)
                os.sched_setaffinity(proc.pid, cpus)
            except OSError:
                pass
        code = proc.wait(timeout=timeout_s)
    except BaseException as exc:  # a timeout, or the TA pressing Ctrl-C: nothing of it keeps running
        sandbox.kill_tree(proc.pid)
        proc.wait()
        if not isinstance(exc, subprocess.TimeoutExpired):
            raise
        return Row(sid, path, status=f"error: grading took over {timeout_s:.0f} s, see {log_path.name}")
    finally:  # cgroups (with what still runs in them) and temporary files of a grader that was killed
        sandbox.reap(proc.pid)
    if code != 0 or not result_path.exists():
        return Row(sid, path, status=f"error: the grader exited with {code}, see {log_path.name}")
    return read_row(sid, path, result_path)


def read_row(sid: str, path: Path, result_path: Path) -> Row:
    data = json.loads(result_path.read_text())
    tests = {t["name"].split(":")[0]: float(t["score"]) for t in data["tests"]}
    status = "graded" if not data.get("output", "").startswith("Not graded") else "not graded: " + data["output"].split(":", 1)[1].strip()
    return Row(sid, path, float(data["score"]), float(data["max_score"]), status, tests)


def write_csv(rows: list[Row], csv_path: Path) -> None:
    test_names: list[str] = []
    for row in rows:
        for name in row.tests or {}:
            if name not in test_names:
                test_names.append(name)
    with open(csv_path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["student_id", "file", "score", "max_score", "status", *test_names])
        for row in sorted(rows, key=lambda r: r.student):
            writer.writerow([row.student, row.file.name, f"{row.score:g}", f"{row.max_score:g}", row.status,
                             *[("" if row.tests is None else f"{row.tests.get(n, 0):g}") for n in test_names]])


def grade_batch(assignment_id: str, folder: Path, csv_path: Path, jobs: int = 2, force: bool = False,
                out_dir: Path | None = None, memory_gib: float | None = None, timeout_s: float = 900) -> list[Row]:
    folder = folder.resolve()
    out_dir = (out_dir or folder / "_grading").resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    submissions = find_submissions(folder, assignment_id, out_dir)
    budget = memory_gib or memory_budget_gib()
    allowed = max(1, int(budget // PEAK_MEMORY_GIB))
    if jobs > allowed:
        print(f"--jobs {jobs} would need about {jobs * PEAK_MEMORY_GIB:.0f} GiB; using {allowed} within the {budget:.0f} GiB budget")
        jobs = allowed
    rows: list[Row] = []
    todo: list[tuple[str, Path]] = []
    for sid, path in submissions.items():
        done = out_dir / f"{sid}.json"
        if not force and done.exists() and done.stat().st_mtime >= path.stat().st_mtime:
            rows.append(read_row(sid, path, done))
        else:
            todo.append((sid, path))
    print(f"{len(submissions)} submissions for {assignment_id}: {len(rows)} already graded, {len(todo)} to grade with {jobs} job(s)")
    if todo:
        print(f"each job: CPU cores {', '.join(str(sorted(job_cpus(k, jobs))) for k in range(jobs))}; {sandbox.cgroup_support().describe(sandbox.Limits())}")
    slots: queue.Queue[int] = queue.Queue()
    for k in range(jobs):
        slots.put(k)

    def in_a_slot(sid: str, path: Path) -> Row:
        slot = slots.get()
        try:
            return grade_one(assignment_id, sid, path, out_dir, timeout_s, job_cpus(slot, jobs))
        finally:
            slots.put(slot)

    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=jobs) as pool, tqdm(total=len(todo), desc=f"grading {assignment_id}", unit="sub") as bar:
        futures = [pool.submit(in_a_slot, sid, path) for sid, path in todo]
        for future in as_completed(futures):
            row = future.result()
            rows.append(row)
            bar.set_postfix_str(f"{row.student}: {row.score:g}" if row.status == "graded" else f"{row.student}: {row.status[:30]}")
            bar.update()
    elapsed = time.monotonic() - start
    write_csv(rows, csv_path)
    if todo:
        print(f"graded {len(todo)} in {elapsed:.0f} s ({60 * len(todo) / max(elapsed, 1e-9):.1f} submissions/min); CSV: {csv_path}")
    errors = [r for r in rows if r.status.startswith("error")]
    if errors:
        print(f"{len(errors)} submission(s) could not be graded; see the logs in {out_dir}")
    return rows
