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
