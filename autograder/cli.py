"""Command line: ``python -m autograder {grade,release,bundle} ...``."""
from __future__ import annotations

import argparse
import contextlib
import sys
import time
import traceback
from pathlib import Path

from autograder.results import Results, validate
from autograder.sanitize import clean


def _cmd_grade(args: argparse.Namespace) -> int:
    """Grade one submission. Whatever happens, a valid results.json is written (when --out is given).

    Exit status: 0 when the submission was graded or refused (a bad file is the student's problem,
    its reason is in the results); 1 when the grader itself failed (results.json then says
    "internal grader error: ..." with 0 points, so that a batch marks the row for the TA).
    """
    from autograder.notebook import SubmissionError

    from autograder.basic_sandbox import protect
    from autograder.sandbox import SandboxUnavailable
    from autograder.secret import MissingSecret

    _tolerant_streams()
    started = time.monotonic()
    status = 0
    _apply_sandbox_policy(args)
    if args.out:
        protect(Path(args.out).resolve().parent)
    try:
        from autograder.runner import grade

        results = grade(args.assignment, args.submission)
    except (SandboxUnavailable, MissingSecret) as exc:  # fail closed: nothing of the submission ran
        print(exc, file=sys.stderr)
        if args.out:
            _unavailable(args.assignment, started).write(args.out)
            print(f"results written to {args.out} (grading unavailable)", file=sys.stderr)
        return UNAVAILABLE
    except SubmissionError as exc:
        results = _not_graded(args.assignment, str(exc), started)
    except Exception as exc:  # noqa: BLE001 - the grader must still produce results.json
        # The details (they may quote the hidden tests) go to the TA's log only, not to the student.
        print(clean(traceback.format_exc(), 20000, 400), file=sys.stderr)
        results = _not_graded(args.assignment, f"internal grader error: {type(exc).__name__} (not a problem with your submission; "
                                               "the course staff have the details)", started)
        status = 1
    if args.out:
        try:
            validate(results.to_gradescope())
        except Exception as exc:  # noqa: BLE001 - never expected: the sinks clean everything
            results = _not_graded(args.assignment, f"internal grader error: invalid results ({type(exc).__name__})", started)
            status = 1
        results.write(args.out)
    figures = _write_figures(results, args.out) if args.out else []
    print(results.summary())
    try:
        from autograder.sandbox import describe

        print(describe())
    except Exception as exc:  # noqa: BLE001
        print(f"worker sandbox: unknown ({type(exc).__name__})")
    if args.out:
        print(f"results written to {args.out}" + "".join(f"\nfigure written to {p}" for p in figures))
    return status


def _write_figures(results: Results, out: str) -> list[Path]:
    """The tests' pictures as PNGs beside results.json (grade-batch: beside ``<student>.json``); a file that cannot be
    written costs the picture only (results.json embeds it too)."""
    try:
        return results.write_figures(out)
    except OSError as exc:
        print(f"figures not written beside {out}: {exc}", file=sys.stderr)
        return []


UNAVAILABLE = 2  # exit status when grading refused to run (no sandbox, no course secret)


def _apply_sandbox_policy(args: argparse.Namespace) -> None:
    if getattr(args, "allow_basic_sandbox", False):
        from autograder.sandbox import allow_basic

        allow_basic()


def _unavailable(assignment_id: str, started: float) -> Results:
    """What a student sees when the grader refused to run: no score of theirs, and whom to tell."""
    return Results(clean(assignment_id, 100, 1), [], output=(
        "Grading is unavailable: the autograder could not set up the protections it needs to run your code. "
        "This is not a problem with your submission. Please tell the course staff; your submission will be graded "
        "once they have fixed it."), execution_time=time.monotonic() - started)


def _not_graded(assignment_id: str, reason: str, started: float) -> Results:
    """0 points with ``reason``: one line per hidden test when the suite can be listed, else none."""
    reason = clean(reason, 1000, 20)
    try:
        from autograder.runner import zero

        return zero(assignment_id, reason, started)
    except Exception:  # noqa: BLE001 - the suite itself may be what failed
        return Results(clean(assignment_id, 100, 1), [], output=f"Not graded: {reason}", execution_time=time.monotonic() - started)


def _tolerant_streams() -> None:
    """Print whatever the terminal cannot encode as replacement characters instead of raising."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, ValueError, OSError):
            stream.reconfigure(errors="replace")


def _cmd_grade_batch(args: argparse.Namespace) -> int:
    from autograder.basic_sandbox import protect
    from autograder.batch import grade_batch
    from autograder.sandbox import SandboxUnavailable, choose
    from autograder.secret import MissingSecret, course_secret

    folder = Path(args.folder)
    out_dir = Path(args.logs) if args.logs else folder / "_grading"
    _apply_sandbox_policy(args)  # inherited by each submission's grade process
    protect(out_dir, Path(args.csv).resolve().parent)
    try:  # refuse before any submission is touched
        choose()
        course_secret()
    except (SandboxUnavailable, MissingSecret) as exc:
        print(exc, file=sys.stderr)
        return UNAVAILABLE
    rows = grade_batch(args.assignment, folder, Path(args.csv), jobs=args.jobs, force=args.force,
                       out_dir=out_dir, memory_gib=args.memory_gib)
    if args.gradebook:
        from autograder.gradebook import record

        graded = {r.student: out_dir / f"{r.student}.json" for r in rows if (out_dir / f"{r.student}.json").exists()}
        n = record(Path(args.gradebook_db), args.assignment, graded)
        print(f"gradebook {args.gradebook_db}: {n} submissions recorded (`nbgrader export` lists them)")
    return 0


def _cmd_release(args: argparse.Namespace) -> int:
    from autograder.release import generate_release

    for assignment_id in args.assignments:
        path = generate_release(assignment_id)
        print(f"released {assignment_id} -> {path}")
    return 0


def _cmd_bundle(args: argparse.Namespace) -> int:
    from autograder.bundle import build_bundle

    path = build_bundle(args.assignment, Path(args.out) if args.out else None)
    print(f"Gradescope autograder bundle: {path}")
    return 0


def _cmd_sandbox(args: argparse.Namespace) -> int:
    """Print the sandbox grading would use here, or why grading would refuse (exit status 2)."""
    from autograder.sandbox import SandboxUnavailable, describe

    _apply_sandbox_policy(args)
    try:
        print(describe())
    except SandboxUnavailable as exc:
        print(exc)
        return UNAVAILABLE
    return 0


def _cmd_secret(args: argparse.Namespace) -> int:
    """Create the course secret if it is missing (``--new``: replace it, for a new term)."""
    from autograder.secret import create, secret_file

    path, written = create(Path(args.file) if args.file else secret_file(), replace=args.new)
    if written:
        print(f"course secret written to {path} (mode 0600; keep it out of git, give it to every grader of the course, "
              f"rebuild the Gradescope bundles)")
    else:
        print(f"course secret: {path} exists (kept; `--new` replaces it for a new term)")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    from autograder.assignments import all_assignments

    for a in all_assignments(include_drafts=args.all):
        if args.long:
            print(f"{a.id}\t{a.status}\t{a.total_points:g} points\t{a.lecture}\t{a.title}")
        else:
            print(a.id)
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from autograder.report import relative, write_report

    folder = Path(args.folder)
    try:
        index = write_report(folder, Path(args.out) if args.out else None, args.assignment, Path(args.logs) if args.logs else None)
    except FileNotFoundError as exc:
        print(f"report: {exc}", file=sys.stderr)
        return 2
    print(f"class report: {relative(index)} (open it in a browser)")
    return 0


def _cmd_similarity(args: argparse.Namespace) -> int:
    from autograder.report import relative
    from autograder.similarity import check_folder

    try:
        csv_path, index, matches = check_folder(args.assignment, Path(args.folder), Path(args.out) if args.out else None,
                                                args.threshold, args.min_overlap)
    except FileNotFoundError as exc:
        print(f"similarity: {exc}", file=sys.stderr)
        return 2
    flagged = [m for m in matches if m.flagged]
    print(f"{len(matches)} pairs compared, {len(flagged)} flagged")
    for m in flagged[:20]:
        print(f"  {m.similarity:.2f}  {clean(m.a.student, 80, 1)}  {clean(m.b.student, 80, 1)}")
    print(f"similarity: {relative(csv_path)} and {relative(index)}")
    return 0


BASIC_HELP = ("where bubblewrap cannot run, grade in the weaker basic sandbox instead of refusing (only on a machine that "
              "holds nothing else secret; README: what the sandbox does, and its limits)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m autograder", description="Grade course notebooks in a sandboxed worker.")
    sub = parser.add_subparsers(dest="command", required=True)

    g = sub.add_parser("grade", help="grade one submission (.ipynb, .py or .zip)")
    g.add_argument("--assignment", required=True, help="assignment id, e.g. a1_pytorch")
    g.add_argument("submission", help="the student's notebook")
    g.add_argument("--out", help="write Gradescope results.json here")
    g.add_argument("--allow-basic-sandbox", action="store_true", help=BASIC_HELP)
    g.set_defaults(func=_cmd_grade)

    gb = sub.add_parser("grade-batch", help="grade every submission in a folder (parallel, resumable, CSV)")
    gb.add_argument("--assignment", required=True)
    gb.add_argument("folder", help="folder of submissions: <student>.ipynb files, or <student>/ folders")
    gb.add_argument("--jobs", type=int, default=2, help="submissions graded in parallel (default 2)")
    gb.add_argument("--csv", default="grades.csv", help="CSV to write (default grades.csv)")
    gb.add_argument("--force", action="store_true", help="regrade submissions that already have results")
    gb.add_argument("--logs", help="where per-submission results and logs go (default FOLDER/_grading)")
    gb.add_argument("--memory-gib", type=float, help="total memory budget; --jobs is reduced to fit (default 75%% of RAM)")
    gb.add_argument("--gradebook", action="store_true", help="also write the scores into nbgrader's gradebook")
    gb.add_argument("--gradebook-db", default="gradebook.db", help="the gradebook's SQLite file (default gradebook.db)")
    gb.add_argument("--allow-basic-sandbox", action="store_true", help=BASIC_HELP)
    gb.set_defaults(func=_cmd_grade_batch)

    sb = sub.add_parser("sandbox", help="print the sandbox grading uses here, or why it would refuse (exit 2)")
    sb.add_argument("--allow-basic-sandbox", action="store_true", help=BASIC_HELP)
    sb.set_defaults(func=_cmd_sandbox)

    sc = sub.add_parser("secret", help="create the course secret the evaluation sets are derived from (kept out of git)")
    sc.add_argument("--new", action="store_true", help="replace an existing secret (a new term); grades change with it")
    sc.add_argument("--file", help="where to write it (default $GRADER_SECRET_FILE or .grader-secret in the course root)")
    sc.set_defaults(func=_cmd_secret)

    r = sub.add_parser("release", help="regenerate assignments/<id>/ from solutions/<id>/ with nbgrader")
    r.add_argument("assignments", nargs="+")
    r.set_defaults(func=_cmd_release)

    ls = sub.add_parser("list", help="the released assignments, one id per line (from autograder/manifests/)")
    ls.add_argument("--all", action="store_true", help="also drafts and planned assignments")
    ls.add_argument("--long", action="store_true", help="status, points, lecture and title too")
    ls.set_defaults(func=_cmd_list)

    b = sub.add_parser("bundle", help="build the Gradescope autograder zip of an assignment")
    b.add_argument("--assignment", required=True)
    b.add_argument("--out", help="zip path (default dist/autograder-<id>.zip)")
    b.set_defaults(func=_cmd_bundle)

    rp = sub.add_parser("report", help="class report (HTML with figures) from what grade-batch left in FOLDER/_grading")
    rp.add_argument("folder", help="the folder grade-batch graded")
    rp.add_argument("--out", help="where to write index.html and its figures (default FOLDER/_grading/report)")
    rp.add_argument("--assignment", help="assignment id (default: found from the test names in the results)")
    rp.add_argument("--logs", help="where grade-batch wrote results and logs, if --logs was given to it (default FOLDER/_grading)")
    rp.set_defaults(func=_cmd_report)

    sm = sub.add_parser("similarity", help="compare the graded cells of every pair of submissions (winnowing); CSV and HTML")
    sm.add_argument("--assignment", required=True)
    sm.add_argument("folder", help="folder of submissions, as for grade-batch")
    sm.add_argument("--out", help="where to write similarity.csv and index.html (default FOLDER/_grading/similarity)")
    sm.add_argument("--threshold", type=float, default=0.6, help="flag pairs at least this similar (0-1, default 0.6)")
    sm.add_argument("--min-overlap", type=int, default=100, help="and sharing at least this many tokens (default 100)")
    sm.set_defaults(func=_cmd_similarity)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
