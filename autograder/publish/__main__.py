"""python -m autograder.publish --out build/public [--preview]"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from autograder.publish import PublishRefused, publish


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m autograder.publish", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("build/public"), help="destination (its .git is kept)")
    parser.add_argument("--preview", action="store_true",
                        help="publish although lecture_utils/config.py still holds placeholders")
    args = parser.parse_args(argv)
    try:
        out = publish(args.out, preview=args.preview)
    except PublishRefused as exc:
        print(f"make publish: refused, nothing written.\n{exc}", file=sys.stderr)
        return 2
    files = sum(1 for p in out.rglob("*") if p.is_file() and ".git" not in p.relative_to(out).parts[:1])
    print(f"==> public repository written: {out} ({files} files). Next: commit and push it (README: Publishing a term)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
