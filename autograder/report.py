"""The class report: ``python -m autograder report FOLDER [--out DIR]``.

Reads what ``grade-batch`` left in ``FOLDER/_grading/`` (``<student>.json`` Gradescope results,
``<student>.log`` the grader's output) and writes ``DIR/index.html`` (default
``FOLDER/_grading/report/``) with PNG figures drawn by matplotlib: the score histogram, the share of
students failing each test with the failure message seen most often, points per part (box plots; the
parts come from the assignment's manifest), grading time per submission, and every student with a link
to their log and the pictures of their trained tests (``<student>.<test>.png``, written by ``grade``). The page has
no scripts and copies the logs and pictures it links to, so the folder can be shared.
"""
from __future__ import annotations

import collections
import json
import os
import re
import shutil
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from matplotlib.figure import Figure

from autograder import assignments
from autograder.feedback_figures import figure_paths, output_text
from autograder.html_page import esc, page, table

FIGURE_DPI = 100
NOT_GRADED = "Not graded"
INTERNAL_ERROR = "Not graded: internal grader error"


@dataclass
class Submission:
    """One student's row: what the grading left, read defensively (a crashed grader leaves only a log)."""

    student: str
    status: str  # "graded", "not graded" or "error"
    reason: str = ""
    score: float = 0.0
    max_score: float = 0.0
    execution_time: float | None = None
    tests: list[dict] = field(default_factory=list)
    log: Path | None = None
    log_link: str | None = None  # relative to the report, once copied
    figures: list[Path] = field(default_factory=list)  # the pictures grade wrote beside the results
    figure_links: list[str] = field(default_factory=list)  # relative to the report, once copied


def load(grading_dir: Path, submissions: dict[str, Path] | None = None) -> list[Submission]:
    """Every student that has results or a log in ``grading_dir`` (and every one of ``submissions``), by id."""
    stems = {p.stem for p in grading_dir.glob("*.json")} | {p.stem for p in grading_dir.glob("*.log")}
    students = sorted(stems | set(submissions or {}))
    return [_read(grading_dir, sid, (submissions or {}).get(sid)) for sid in students]


def _read(grading_dir: Path, sid: str, file: Path | None) -> Submission:
    result_path, log_path = grading_dir / f"{sid}.json", grading_dir / f"{sid}.log"
    log = log_path if log_path.is_file() else None
    if not result_path.is_file():
        if log is None:
            return Submission(sid, "not graded", "no results yet: run grade-batch on the folder")
        return Submission(sid, "error", "no results: the grader crashed or was stopped (see its log)", log=log)
    try:
        data = json.loads(result_path.read_text(encoding="utf-8"))
        tests = [t for t in data.get("tests", []) if isinstance(t, dict)]
        sub = Submission(sid, "graded", score=float(data.get("score", 0.0)), max_score=float(data.get("max_score", 0.0)),
                         execution_time=float(data["execution_time"]) if "execution_time" in data else None, tests=tests, log=log)
        output = str(data.get("output", ""))
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        return Submission(sid, "error", f"unreadable results file ({type(exc).__name__}); grade it again with --force", log=log)
    sub.figures = [p for t in tests for p in figure_paths(result_path, str(t.get("name", ""))) if p.is_file()]
    if output.startswith(INTERNAL_ERROR):
        sub.status, sub.reason = "error", output.split("\n")[0][len(NOT_GRADED) + 2:]
    elif output.startswith(NOT_GRADED):
        sub.status, sub.reason = "not graded", output.split("\n")[0][len(NOT_GRADED) + 2:]
    if file is not None and file.exists() and file.stat().st_mtime > result_path.stat().st_mtime:
        sub.reason = (sub.reason + "; " if sub.reason else "") + "the file is newer than its results: run grade-batch again"
    return sub


def test_key(name: str) -> str:
    """``test_x[param]: docstring`` -> ``test_x[param]`` (the results' names carry the docstring's first line)."""
    return str(name).split(":")[0].strip()


def infer_assignment(subs: list[Submission]) -> str | None:
    """The released assignment whose hidden tests define most of the test functions named in the results."""
    names = {test_key(t.get("name", "")).split("[")[0] for s in subs for t in s.tests}
    best, best_hits = None, 0
    for a in assignments.all_assignments():
        defined = set()
        for path in a.tests_dir.glob("test_*.py"):
            defined |= set(re.findall(r"^\s*def (test_\w+)\(", path.read_text(), re.M))
        hits = len(names & defined)
        if hits > best_hits:
            best, best_hits = a.id, hits
    return best


def parts_of_tests(assignment_id: str) -> dict[str, str]:
    """test name (without docstring) -> the manifest's part (grade_id), from the hidden suite's markers."""
    from autograder.runner import collect

    return {test_key(t.name): t.part for t in collect(assignments.get(assignment_id))}


# ----------------------------------------------------------------------------- figures
def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=FIGURE_DPI, layout="constrained")
    return fig


def _save(fig: Figure, path: Path) -> str:
    fig.savefig(path, dpi=FIGURE_DPI)
    return path.name


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=12, color="#57606a", transform=ax.transAxes)
    ax.set_axis_off()


def score_histogram(graded: list[Submission], max_score: float, path: Path) -> str:
    fig = _figure(7, 3.6)
    ax = fig.add_subplot()
    if not graded:
        _empty(ax, "no graded submission")
    else:
        scores = [s.score for s in graded]
        top = max_score or max(scores) or 1.0
        ax.hist(scores, bins=[top * i / 20 for i in range(21)], color="#4c72b0", edgecolor="white")
        med = statistics.median(scores)
        ax.axvline(med, color="#dd8452", linestyle="--", label=f"median {med:g}")
        ax.set_xlim(0, top)
        ax.set_xlabel(f"score (out of {top:g})")
        ax.set_ylabel("submissions")
        ax.yaxis.get_major_locator().set_params(integer=True)
        ax.legend(loc="upper left")
    ax.set_title(f"Scores of {len(graded)} graded submission(s)")
    return _save(fig, path)


def failure_shares(graded: list[Submission]) -> list[dict]:
    """Per test: how many graded students failed it and the failure message seen most often, most failed first."""
    stats: dict[str, dict] = {}
    for s in graded:
        for t in s.tests:
            key = test_key(t.get("name", ""))
            row = stats.setdefault(key, {"test": key, "failed": 0, "total": 0, "max_score": float(t.get("max_score", 0)), "messages": collections.Counter(), "example": {}})
            row["total"] += 1
            if t.get("status") != "passed" and float(t.get("score", 0)) < float(t.get("max_score", 0)):
                row["failed"] += 1
                first = next((ln.strip() for ln in output_text(t).split("\n") if ln.strip()), "(no message)")
                shape = re.sub(r"-?\d+(?:\.\d+)?(?:e-?\d+)?", "#", first)  # the same message with other numbers
                row["messages"][shape] += 1
                row["example"].setdefault(shape, first)
    rows = []
    for row in stats.values():
        row["share"] = row["failed"] / row["total"] if row["total"] else 0.0
        common = row["messages"].most_common(1)
        row["message"], row["message_count"] = (row["example"][common[0][0]], common[0][1]) if common else ("", 0)
        rows.append(row)
    return sorted(rows, key=lambda r: (-r["share"], r["test"]))


def failure_chart(rows: list[dict], path: Path) -> str:
    fig = _figure(8, max(2.6, 0.24 * len(rows) + 1.2))
    ax = fig.add_subplot()
    if not rows:
        _empty(ax, "no test results")
    else:
        names = [r["test"] if len(r["test"]) <= 48 else r["test"][:47] + "…" for r in rows]
        shares = [100 * r["share"] for r in rows]
        ax.barh(range(len(rows)), shares, color=["#c44e52" if v >= 50 else "#dd8452" if v > 0 else "#55a868" for v in shares])
        ax.set_yticks(range(len(rows)), names, fontsize=8)
        ax.set_ylim(len(rows) - 0.4, -0.6)  # most failed on top, no empty margins
        ax.set_xlim(0, 100)
        ax.set_xlabel("graded students who failed the test (%)")
    ax.set_title("Failed tests, most failed first")
    return _save(fig, path)


def part_points(graded: list[Submission], parts: list[assignments.Part], part_of: dict[str, str]) -> dict[str, list[float]]:
    """Per part (grade_id): each graded student's points in it."""
    out: dict[str, list[float]] = {p.cell: [] for p in parts}
    for s in graded:
        got = collections.defaultdict(float)
        for t in s.tests:
            part = part_of.get(test_key(t.get("name", "")))
            if part in out:
                got[part] += float(t.get("score", 0))
        for cell in out:
            out[cell].append(got[cell])
    return out


def part_boxplot(points: dict[str, list[float]], parts: list[assignments.Part], path: Path) -> str:
    fig = _figure(8, 3.8)
    ax = fig.add_subplot()
    if not parts or not any(points.values()):
        _empty(ax, "no parts to show (unknown assignment or no graded submission)")
    else:
        data = [[100 * v / p.points for v in points[p.cell]] if p.points else points[p.cell] for p in parts]
        ax.boxplot(data, orientation="horizontal", tick_labels=[f"{p.cell} ({p.points:g})" for p in parts], widths=0.6,
                   medianprops={"color": "#dd8452"}, flierprops={"markersize": 3})
        ax.invert_yaxis()
        ax.set_xlim(-3, 103)
        ax.set_xlabel("points in the part (% of its points)")
        ax.tick_params(axis="y", labelsize=9)
    ax.set_title("Points per part (each part's points in parentheses)")
    return _save(fig, path)


def time_chart(subs: list[Submission], path: Path) -> str:
    timed = sorted((s for s in subs if s.execution_time is not None), key=lambda s: -s.execution_time)
    fig = _figure(8, 3.4)
    ax = fig.add_subplot()
    if not timed:
        _empty(ax, "no grading times")
    else:
        times = [s.execution_time for s in timed]
        colors = ["#4c72b0" if s.status == "graded" else "#c44e52" for s in timed]
        if len(timed) <= 40:
            ax.bar(range(len(timed)), times, color=colors)
            ax.set_xticks(range(len(timed)), [s.student[:16] for s in timed], rotation=60, ha="right", fontsize=8)
        else:
            ax.scatter(range(len(timed)), times, s=6, c=colors)
            ax.set_xlabel("submissions, slowest first")
        med = statistics.median(times)
        ax.axhline(med, color="#dd8452", linestyle="--", label=f"median {med:.1f} s")
        ax.set_ylabel("grading time (s)")
        ax.set_ylim(0, max(times) * 1.1 or 1)
        ax.legend(loc="upper right")
    ax.set_title(f"Grading time per submission (total {sum(s.execution_time or 0 for s in timed) / 60:.1f} min; red: not graded)")
    return _save(fig, path)


# ----------------------------------------------------------------------------- the page
def _copy_logs(subs: list[Submission], out: Path) -> None:
    """Copy each log into ``out/logs/`` under a safe name (``.txt``: browsers show it as text)."""
    logs = out / "logs"
    if logs.exists():
        shutil.rmtree(logs)
    logs.mkdir(parents=True)
    for i, s in enumerate(subs):
        if s.log is not None:
            name = f"{i:04d}-{re.sub(r'[^A-Za-z0-9._-]', '_', s.student)[:60]}.txt"
            shutil.copyfile(s.log, logs / name)
            s.log_link = f"logs/{name}"


def _copy_figures(subs: list[Submission], out: Path) -> None:
    """Copy each student's pictures into ``out/pictures/`` under safe names."""
    pictures = out / "pictures"
    if pictures.exists():
        shutil.rmtree(pictures)
    for i, s in enumerate(subs):
        for k, path in enumerate(s.figures):
            pictures.mkdir(parents=True, exist_ok=True)
            name = f"{i:04d}-{k}-{re.sub(r'[^A-Za-z0-9._-]', '_', path.name)[-100:]}"
            shutil.copyfile(path, pictures / name)
            s.figure_links.append(f"pictures/{name}")


def _log_cell(s: Submission) -> str:
    log = f"<a href=\"{s.log_link}\">log</a>" if s.log_link else "no log"
    return log + "".join(f" <a href=\"{link}\">picture {k + 1}</a>" for k, link in enumerate(s.figure_links))


def write_report(folder: Path, out: Path | None = None, assignment_id: str | None = None, grading_dir: Path | None = None) -> Path:
    """Write ``out/index.html`` and its figures for the batch graded in ``folder``; return the page's path."""
    folder = Path(folder)
    grading_dir = Path(grading_dir) if grading_dir else folder / "_grading"
    if not grading_dir.is_dir():
        raise FileNotFoundError(f"{grading_dir} does not exist: run `python -m autograder grade-batch --assignment ID {folder}` first")
    out = Path(out) if out else grading_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    subs = load(grading_dir)
    if assignment_id is None:
        assignment_id = infer_assignment(subs)
    a = assignments.get(assignment_id) if assignment_id else None
    if a is not None:  # also the submissions in the folder that left nothing in _grading
        from autograder.batch import find_submissions

        subs = load(grading_dir, find_submissions(folder.resolve(), a.id, grading_dir.resolve()))
    if not subs:
        raise FileNotFoundError(f"{grading_dir} holds no results (<student>.json) or logs: run grade-batch first")
    _copy_logs(subs, out)
    _copy_figures(subs, out)
    graded = [s for s in subs if s.status == "graded"]
    max_score = max((s.max_score for s in graded), default=a.total_points if a else 0.0)
    parts = list(a.parts) if a else []
    part_of = parts_of_tests(a.id) if a and graded else {}
    fails = failure_shares(graded)
    figures = [
        (score_histogram(graded, max_score, out / "scores.png"), "Score histogram"),
        (failure_chart(fails, out / "failed_tests.png"), "Share of graded students failing each test"),
        (part_boxplot(part_points(graded, parts, part_of), parts, out / "parts.png"), "Points per part"),
        (time_chart(subs, out / "grading_time.png"), "Grading time per submission"),
    ]
    problems = [s for s in subs if s.status != "graded" or s.reason]
    scores = [s.score for s in graded]
    title = f"Class report: {a.id} — {a.title}" if a else "Class report"
    body = [f"<h1>{esc(title)}</h1>",
            f"<p class=\"meta\">{len(subs)} student(s): {len(graded)} graded, "
            f"{sum(s.status == 'not graded' for s in subs)} not graded, {sum(s.status == 'error' for s in subs)} error(s)"
            + (f"; mean {statistics.mean(scores):.1f}, median {statistics.median(scores):g} of {max_score:g} points" if scores else "")
            + f". Read from {esc(grading_dir)}.</p>"]
    body.append("<h2 id=\"problems\">Not graded or crashed</h2>")
    if problems:
        body.append(table(["student", "status", "reason", "log"],
                          [[esc(s.student, 200), f"<span class=\"bad\">{s.status}</span>" if s.status != "graded" else s.status,
                            esc(s.reason, 400), _log_cell(s)] for s in problems]))
    else:
        body.append("<p class=\"ok\">Every submission was graded.</p>")
    body.append("<h2 id=\"figures\">Figures</h2>\n<div class=\"figures\">")
    body += [f"<figure><img src=\"{src}\" alt=\"{esc(cap)}\"><figcaption>{esc(cap)}</figcaption></figure>" for src, cap in figures]
    body.append("</div>")
    body.append("<h2 id=\"tests\">Tests, most failed first</h2>")
    body.append(table(["test", "part", "points", "failed", "most common failure message", "seen"],
                      [[esc(r["test"], 200), esc(part_of.get(r["test"], "?")), f"{r['max_score']:g}",
                        f"{100 * r['share']:.0f} % ({r['failed']}/{r['total']})", f"<div class=\"msg\">{esc(r['message'], 400)}</div>",
                        str(r["message_count"]) if r["message_count"] else ""] for r in fails], numeric={2, 3, 5}))
    body.append("<h2 id=\"students\">Every student</h2>")
    body.append(table(["student", "score", "status", "grading time", "log and pictures"],
                      [[esc(s.student, 200), f"{s.score:g} / {s.max_score:g}" if s.status == "graded" else "–", esc(s.status),
                        f"{s.execution_time:.1f} s" if s.execution_time is not None else "–", _log_cell(s)] for s in subs],
                      numeric={1, 3}))
    index = out / "index.html"
    index.write_text(page(title, "\n".join(body)), encoding="utf-8")
    return index


def relative(path: Path) -> str:
    """``path`` relative to the working directory when it is below it (shorter messages)."""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return str(path)
    return str(path) if rel.startswith("..") else rel
