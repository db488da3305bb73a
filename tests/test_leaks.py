"""No solution body and no hidden test leaks into what students can see."""
import re
from pathlib import Path

import pytest

from conftest import ROOT

PUBLIC = ["assignments", "lecture_utils", "book"]
TEXT_SUFFIXES = {".py", ".ipynb", ".md", ".html", ".txt", ".json", ".yml", ".yaml", ".js", ".tex", ".bib", ".cfg", ".toml"}
SOLUTION_BLOCK = re.compile(r"### BEGIN SOLUTION\n(.*?)### END SOLUTION", re.S)


# Library idioms every PyTorch text shows; a solution line equal to one of them reveals nothing.
COMMON_IDIOMS = {"optimizer.zero_grad()", "optimizer.step()", "loss.backward()"}


def _distinctive(lines, min_len):
    for line in lines:
        s = line.strip()
        if len(s) >= min_len and not s.startswith("#") and not s.startswith(("import ", "from ")) and s not in COMMON_IDIOMS:
            yield s


def solution_lines() -> set[str]:
    found = set()
    for src in (ROOT / "solutions").rglob("*"):
        if src.suffix in {".py", ".ipynb"}:
            text = src.read_text()
            if src.suffix == ".ipynb":
                import nbformat

                text = "\n".join(c.source for c in nbformat.read(src, as_version=4).cells)
            for body in SOLUTION_BLOCK.findall(text):
                found.update(_distinctive(body.splitlines(), 20))
    return found


def hidden_test_lines() -> set[str]:
    found = set()
    for path in (ROOT / "autograder" / "hidden_tests").rglob("test_*.py"):
        found.update(s for s in _distinctive(path.read_text().splitlines(), 40) if not s.startswith(('"""', "def ", "@pytest")))
    return found


def public_files():
    for top in PUBLIC:
        for path in (ROOT / top).rglob("*"):
            # .jupyter_cache keeps old executions of edited pages; it is a private build cache, never published
            if path.is_file() and path.suffix in TEXT_SUFFIXES and not {"__pycache__", ".jupyter_cache"} & set(path.parts):
                yield path


def _normalize(text: str) -> str:
    # notebook JSON escapes quotes; HTML escapes too: compare on an unescaped view
    import html

    return html.unescape(text.replace('\\"', '"').replace("\\n", "\n"))


def test_there_is_something_to_check():
    assert len(solution_lines()) > 50
    assert len(hidden_test_lines()) > 20


def find_leaks(secrets: set[str], files) -> list[str]:
    leaks = []
    for path in files:
        text = _normalize(path.read_text(errors="replace"))
        leaks += [f"{path}: {line}" for line in secrets if line in text]
    return leaks


@pytest.mark.parametrize("kind", ["solution", "hidden test"])
def test_public_artifacts_do_not_contain_secret_lines(kind):
    secrets = solution_lines() if kind == "solution" else hidden_test_lines()
    leaks = find_leaks(secrets, public_files())
    assert not leaks, f"{kind} lines found in public artifacts:\n" + "\n".join(leaks[:20])


def test_the_check_catches_planted_leaks(tmp_path):
    solution_line, test_line = sorted(solution_lines())[0], sorted(hidden_test_lines())[0]
    (tmp_path / "page.html").write_text(f"<pre>{solution_line.replace('<', '&lt;')}</pre>")
    (tmp_path / "nb.ipynb").write_text(f'{{"source": ["{test_line.replace(chr(34), chr(92) + chr(34))}\\n"]}}')
    files = list(tmp_path.iterdir())
    assert find_leaks({solution_line}, files) and find_leaks({test_line}, files)
