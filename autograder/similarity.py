"""Similarity check: ``python -m autograder similarity --assignment ID FOLDER [--out DIR]``.

Compares the graded cells of every pair of submissions with copydetect's winnowing (Schleimer, Wilkerson
and Aiken 2003, the algorithm of MOSS): each submission's graded cells, taken in the release's order
(:func:`autograder.notebook.extract`, so moving cells around changes nothing), are tokenized with Pygments;
copydetect replaces every name by ``V``/``F``/``O`` and every string by ``S`` and drops comments and
whitespace, so renamed variables and removed comments change nothing either. k-grams of the filtered
code are hashed and winnowed into fingerprints; all k-grams of the release's own graded cells (given
code, signatures, docstrings, stubs) are removed from every submission's fingerprints, so the release
never counts.

A pair's similarity is the larger of its two shares: the fraction of one submission's fingerprinted code
that also occurs in the other. A pair is flagged when that share is at least ``threshold`` and the shared
code is at least ``min_overlap`` filtered tokens long (a short submission that shares three lines with
another is not a case). Writes ``similarity.csv`` (every pair) and ``index.html`` (flagged pairs side by
side, shared regions highlighted).
"""
from __future__ import annotations

import csv
import io
import itertools
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from copydetect import CodeFingerprint, compare_files
from copydetect.utils import filter_code, hashed_kgrams
from matplotlib.figure import Figure

from autograder import assignments
from autograder.html_page import esc, page, table
from autograder.notebook import SubmissionError, extract, graded_cells, read_submission

K = 30  # noise threshold: shared code shorter than this many filtered tokens is ignored
WINDOW = 4  # winnowing window: shared code of K + WINDOW - 1 = 33 tokens is always seen
THRESHOLD = 0.6
MIN_OVERLAP = 100
MAX_PAIRS_SHOWN = 40  # flagged pairs shown side by side (all of them are in the CSV and the table)


@dataclass
class Code:
    """One submission's graded code as compared: the text (cells in release order) and its fingerprints."""

    student: str
    text: str
    fingerprint: CodeFingerprint


@dataclass
class Match:
    a: Code
    b: Code
    similarity: float  # max of the two shares
    shares: tuple[float, float]
    overlap: int  # shared filtered tokens (in a)
    slices: tuple[np.ndarray, np.ndarray]  # copydetect's 2xN (start, end) character slices in a.text and b.text
    flagged: bool


def document(cells: list[tuple[str, str]]) -> str:
    """The graded cells as one text; the header comments only help the reader (comments are not compared)."""
    return "".join(f"# ---- cell {gid}\n{src.rstrip()}\n\n" for gid, src in cells)


def fingerprint(text: str, boilerplate: np.ndarray, k: int = K, window: int = WINDOW) -> CodeFingerprint:
    return CodeFingerprint("cells.py", k, window, boilerplate=boilerplate, language="python", fp=io.StringIO(text))


def release_boilerplate(release, k: int = K) -> np.ndarray:
    """Every k-gram hash of the release's graded cells (not only its winnowed ones): none of them may count."""
    filtered, _ = filter_code(document([(g.grade_id, g.stub) for g in graded_cells(release)]), "cells.py", "python")
    return np.unique(hashed_kgrams(filtered, k)) if len(filtered) >= k else np.array([], dtype=np.int64)


def compare(a: Code, b: Code, threshold: float = THRESHOLD, min_overlap: int = MIN_OVERLAP) -> Match:
    """How much of ``a`` and ``b`` is the same code, and whether that makes a case."""
    if not (a.fingerprint.hashes & b.fingerprint.hashes):
        return Match(a, b, 0.0, (0.0, 0.0), 0, (np.zeros((2, 0), int), np.zeros((2, 0), int)), False)
    overlap, (s1, s2), slices = compare_files(a.fingerprint, b.fingerprint)
    similarity = float(max(s1, s2))
    return Match(a, b, similarity, (float(s1), float(s2)), int(overlap), slices, bool(similarity >= threshold and overlap >= min_overlap))


def load_codes(assignment_id: str, folder: Path, skip: Path | None = None) -> tuple[list[Code], dict[str, str]]:
    """Every submission of ``folder`` (ids as grade-batch names them) as :class:`Code`; and those that could not
    be read, with the reason."""
    from autograder.batch import find_submissions

    a = assignments.get(assignment_id)
    release = a.release()
    boilerplate = release_boilerplate(release)
    skip = (skip or folder / "_grading").resolve()
    codes, unread = [], {}
    logging.getLogger().setLevel(logging.ERROR)  # copydetect warns about files with nothing to compare
    for sid, path in find_submissions(folder.resolve(), a.id, skip).items():
        try:
            cells = extract(read_submission(path), release).cells
        except SubmissionError as exc:
            unread[sid] = str(exc)
            continue
        text = document(cells)
        codes.append(Code(sid, text, fingerprint(text, boilerplate)))
    return codes, unread


def compare_all(codes: list[Code], threshold: float = THRESHOLD, min_overlap: int = MIN_OVERLAP) -> list[Match]:
    """Every pair, most similar first."""
    matches = [compare(a, b, threshold, min_overlap) for a, b in itertools.combinations(codes, 2)]
    return sorted(matches, key=lambda m: (-m.similarity, m.a.student, m.b.student))


# ----------------------------------------------------------------------------- output
def write_csv(matches: list[Match], path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["student_a", "student_b", "similarity", "flagged"])
        for m in matches:
            writer.writerow([m.a.student, m.b.student, f"{m.similarity:.4f}", "yes" if m.flagged else "no"])


def highlighted(text: str, slices: np.ndarray) -> str:
    """``text`` as HTML with the shared regions (character slices) marked."""
    out, at = [], 0
    for start, end in sorted(zip(slices[0].tolist(), slices[1].tolist())) if slices.size else []:
        start, end = max(int(start), at), int(end)
        if end <= start:
            continue
        out += [_code(text[at:start]), "<mark>", _code(text[start:end]), "</mark>"]
        at = end
    out.append(_code(text[at:]))
    return "".join(out)


def _code(text: str) -> str:
    return esc(text, 10**7, 10**6)


def histogram(matches: list[Match], threshold: float, path: Path) -> str:
    fig = Figure(figsize=(7, 3.2), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    values = [m.similarity for m in matches]
    ax.hist(values, bins=[i / 40 for i in range(41)], color="#4c72b0", edgecolor="white", log=len(values) > 50)
    ax.axvline(threshold, color="#c44e52", linestyle="--", label=f"flagged from {threshold:g}")
    ax.set_xlim(0, 1)
    ax.set_xlabel("similarity of a pair (share of the code found in the other)")
    ax.set_ylabel("pairs" + (" (log scale)" if len(values) > 50 else ""))
    ax.set_title(f"{len(values)} pairs, {sum(m.flagged for m in matches)} flagged")
    ax.legend(loc="upper right")
    fig.savefig(path, dpi=100)
    return path.name


def write_html(assignment_id: str, codes: list[Code], unread: dict[str, str], matches: list[Match], threshold: float,
               min_overlap: int, out: Path, seconds: float) -> Path:
    flagged = [m for m in matches if m.flagged]
    a = assignments.get(assignment_id)
    title = f"Similarity: {a.id} — {a.title}"
    body = [f"<h1>{esc(title)}</h1>",
            f"<p class=\"meta\">{len(codes)} submission(s) compared ({len(matches)} pairs in {seconds:.1f} s), "
            f"{len(unread)} not readable; <b>{len(flagged)} pair(s) flagged</b> (similarity ≥ {threshold:g} and at least "
            f"{min_overlap} shared tokens). Similarity: the larger share of one submission's graded code found in the other, "
            "after names, strings, comments and the release's own code are taken out (copydetect winnowing, "
            f"k = {K}, window {WINDOW}). A flag is a reason to read both, not a verdict.</p>",
            f"<img src=\"{histogram(matches, threshold, out / 'similarity.png')}\" alt=\"histogram of pair similarities\">"]
    body.append("<h2 id=\"flagged\">Flagged pairs</h2>")
    if flagged:
        body.append(table(["#", "student a", "student b", "similarity", "share of a / of b", "shared tokens"],
                          [[f"<a href=\"#pair{i}\">{i + 1}</a>" if i < MAX_PAIRS_SHOWN else str(i + 1), esc(m.a.student, 200), esc(m.b.student, 200),
                            f"{m.similarity:.2f}", f"{m.shares[0]:.2f} / {m.shares[1]:.2f}", str(m.overlap)] for i, m in enumerate(flagged)],
                          numeric={0, 3, 5}))
    else:
        body.append("<p class=\"ok\">No pair is flagged.</p>")
    unflagged = [m for m in matches if not m.flagged][:10]
    if unflagged:
        body.append("<h2 id=\"closest\">Most similar pairs not flagged</h2>")
        body.append(table(["student a", "student b", "similarity", "shared tokens"],
                          [[esc(m.a.student, 200), esc(m.b.student, 200), f"{m.similarity:.2f}", str(m.overlap)] for m in unflagged], numeric={2, 3}))
    if unread:
        body.append("<h2 id=\"unread\">Not compared</h2>")
        body.append(table(["student", "reason"], [[esc(s, 200), esc(r, 400)] for s, r in sorted(unread.items())]))
    for i, m in enumerate(flagged[:MAX_PAIRS_SHOWN]):
        body.append(f"<h2 id=\"pair{i}\">{i + 1}. {esc(m.a.student, 200)} and {esc(m.b.student, 200)}: {m.similarity:.2f}</h2>")
        body.append("<div class=\"pair\">"
                    f"<div><b>{esc(m.a.student, 200)}</b> ({m.shares[0]:.0%} shared)<pre>{highlighted(m.a.text, m.slices[0])}</pre></div>"
                    f"<div><b>{esc(m.b.student, 200)}</b> ({m.shares[1]:.0%} shared)<pre>{highlighted(m.b.text, m.slices[1])}</pre></div>"
                    "</div>")
    if len(flagged) > MAX_PAIRS_SHOWN:
        body.append(f"<p>{len(flagged) - MAX_PAIRS_SHOWN} more flagged pair(s) are listed above and in similarity.csv.</p>")
    index = out / "index.html"
    index.write_text(page(title, "\n".join(body)), encoding="utf-8")
    return index


def check_folder(assignment_id: str, folder: Path, out: Path | None = None, threshold: float = THRESHOLD,
                 min_overlap: int = MIN_OVERLAP) -> tuple[Path, Path, list[Match]]:
    """Compare every pair of submissions in ``folder``; write ``out/similarity.csv`` and ``out/index.html``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder of submissions")
    out = Path(out) if out else folder / "_grading" / "similarity"
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    codes, unread = load_codes(assignment_id, folder)
    matches = compare_all(codes, threshold, min_overlap)
    write_csv(matches, out / "similarity.csv")
    index = write_html(assignment_id, codes, unread, matches, threshold, min_overlap, out, time.monotonic() - started)
    return out / "similarity.csv", index, matches
