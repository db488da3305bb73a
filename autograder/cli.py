"""Command line: ``python -m autograder {grade,release,bundle} ...``."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _cmd_grade(args: argparse.Namespace) -> int:
    from autograder.results import validate
    from autograder.runner import grade

    from autograder.sandbox import describe

    results = grade(args.assignment, args.submission)
    print(results.summary())
    print(describe())
    if args.out:
        results.write(args.out)
        validate(json.loads(Path(args.out).read_text()))
        print(f"results written to {args.out}")
    return 0


def _cmd_grade_batch(args: argparse.Namespace) -> int:
    from autograder.batch import grade_batch

    folder = Path(args.folder)
    out_dir = Path(args.logs) if args.logs else folder / "_grading"
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m autograder", description="Grade course notebooks in a sandboxed worker.")
    sub = parser.add_subparsers(dest="command", required=True)

    g = sub.add_parser("grade", help="grade one submission (.ipynb, .py or .zip)")
    g.add_argument("--assignment", required=True, help="assignment id, e.g. a1_pytorch")
    g.add_argument("submission", help="the student's notebook")
    g.add_argument("--out", help="write Gradescope results.json here")
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
    gb.set_defaults(func=_cmd_grade_batch)

    r = sub.add_parser("release", help="regenerate assignments/<id>/ from solutions/<id>/ with nbgrader")
    r.add_argument("assignments", nargs="+")
    r.set_defaults(func=_cmd_release)

    b = sub.add_parser("bundle", help="build the Gradescope autograder zip of an assignment")
    b.add_argument("--assignment", required=True)
    b.add_argument("--out", help="zip path (default dist/autograder-<id>.zip)")
    b.set_defaults(func=_cmd_bundle)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
