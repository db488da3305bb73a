"""`make publish`: the public repository (build/public) holds what students use and nothing private;
its student package keeps Colab's torch; its Pages workflow builds the book."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
import tomllib
import zipfile
from pathlib import Path

import nbformat
import pytest
import yaml

from autograder.publish import PublishRefused, publish
from autograder.publish.privacy import private_content
from conftest import ASSIGNMENT_IDS, ROOT
from lecture_utils import config
from published import colab_stand_in, fresh_venv, publish_preview
from test_leaks import TEXT_SUFFIXES, find_leaks, hidden_test_lines, solution_lines

PLACEHOLDER_URL = config.PLACEHOLDERS["SUBMISSION_URL"]


@pytest.fixture(scope="module")
def public(tmp_path_factory) -> Path:
    return publish_preview(tmp_path_factory.mktemp("published") / "public")


def text_files(root: Path):
    for path in sorted(root.rglob("*")):
        if path.is_file() and (path.suffix in TEXT_SUFFIXES or path.name in {"LICENSE", ".gitignore", "METADATA"}):
            yield path


def test_the_public_tree_holds_what_students_use(public):
    assert sorted(p.name for p in public.iterdir()) == [".github", ".gitignore", "LICENSE", "README.md", "assignments",
                                                        "book", "lecture_utils", "pyproject.toml"]
    for a in ASSIGNMENT_IDS:
        assert (public / "assignments" / a / f"{a}.ipynb").read_bytes() == (ROOT / "assignments" / a / f"{a}.ipynb").read_bytes()
    chapters = sorted(p.relative_to(ROOT / "book") for p in (ROOT / "book").glob("ch*/*.ipynb"))
    assert len(chapters) > 15 and all((public / "book" / c).read_bytes() == (ROOT / "book" / c).read_bytes() for c in chapters)
    for name in ("_config.yml", "_toc.yml", "references.bib", "intro.md", "_ext/course_links.py", "_static/colab-badge.svg"):
        assert (public / "book" / name).is_file(), name
    assert not (public / "book" / "_src").exists() and not (public / "book" / "_build").exists()
    assert (public / "lecture_utils" / "data").is_dir() and not list(public.rglob("__pycache__"))


def test_nothing_private_in_the_public_tree(public):
    """The leak test's rule (every distinctive line of every solution block, every hidden-test line), the
    publish step's own check (private folders, nbgrader markers, the course secret), and no grader code."""
    files = list(text_files(public))
    assert len(files) > 60
    for kind, lines in (("solution", solution_lines()), ("hidden test", hidden_test_lines())):
        leaks = find_leaks(lines, files)
        assert not leaks, f"{kind} lines in the public tree:\n" + "\n".join(leaks[:20])
    assert private_content(public) == []
    imports_grader = re.compile(r"^\s*(from|import)\s+autograder\b", re.M)
    assert not [p for p in public.rglob("*.py") if imports_grader.search(p.read_text())], "lecture_utils or the book imports the grader"


def test_the_privacy_check_refuses_planted_material(public, tmp_path):
    tree = tmp_path / "tree"
    shutil.copytree(public, tree)
    (tree / "solutions" / "a1_pytorch").mkdir(parents=True)
    (tree / "solutions" / "a1_pytorch" / "a1_pytorch.py").write_text("x = 1\n")
    (tree / "lecture_utils" / "planted.py").write_text("def f():\n    ### BEGIN SOLUTION\n    return 1\n    ### END SOLUTION\n")
    secret = "ab" * 32
    (tree / "book" / "planted.md").write_text(f"seed {secret}\n")
    problems = "\n".join(private_content(tree, [secret]))
    assert "solutions" in problems and "### BEGIN SOLUTION" in problems and "course secret" in problems, problems
    # and the leak test's rule sees a solution line planted in a published notebook
    line = sorted(solution_lines())[0]
    nb = nbformat.read(tree / "assignments" / "a1_pytorch" / "a1_pytorch.ipynb", as_version=4)
    nb.cells[-1].source += "\n" + line
    nbformat.write(nb, tree / "assignments" / "a1_pytorch" / "a1_pytorch.ipynb")
    assert find_leaks({line}, text_files(tree))


def test_publish_refuses_a_tree_with_the_course_secret(tmp_path, monkeypatch):
    """The course secret (GRADER_SECRET) planted in a published file stops publishing; nothing is written."""
    secret = (ROOT / "lecture_utils" / "config.py").read_text().splitlines()[0]  # any text that is published
    monkeypatch.setenv("GRADER_SECRET", secret)
    with pytest.raises(PublishRefused, match="course secret"):
        publish(tmp_path / "public", preview=True)
    assert not (tmp_path / "public").exists()


def _copy(public: Path, tmp: Path) -> Path:
    """A copy of the published tree (setuptools writes build/ and egg-info into the tree it builds)."""
    return Path(shutil.copytree(public, tmp / "public-copy"))


def _build_wheel(public: Path, out: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
                    "-w", str(out), str(_copy(public, out.parent))], check=True, capture_output=True, timeout=300)
    return next(out.glob("*.whl"))


def test_the_wheel_holds_lecture_utils_only_with_version_ranges(public, tmp_path):
    wheel = _build_wheel(public, tmp_path / "dist")
    assert wheel.name.startswith("dl4cv_lecture_utils-")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        zf.extractall(tmp_path / "unpacked")
    assert all(n.startswith(("lecture_utils/", "dl4cv_lecture_utils-")) for n in names), [n for n in names if not n.startswith("lecture_utils/")]
    assert {"lecture_utils/__init__.py", "lecture_utils/config.py", "lecture_utils/data/__init__.py"} <= set(names)
    files = list(text_files(tmp_path / "unpacked"))
    assert not find_leaks(solution_lines(), files) and not find_leaks(hidden_test_lines(), files)
    assert private_content(tmp_path / "unpacked") == []
    metadata = next((tmp_path / "unpacked").glob("*.dist-info/METADATA")).read_text()
    requires = [line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    core = {r.split(">")[0].split("<")[0].strip(): r for r in requires if "extra ==" not in r}
    assert {"torch", "torchvision", "numpy"} <= set(core), requires
    assert not any("==" in r.split(";")[0] or "~=" in r for r in requires), f"pins in the student package: {requires}"
    assert ">=2.4" in core["torch"], "the oldest torch supported (README, pyproject comment) is 2.4"


# A current Colab runtime (GPU image) and the oldest versions the student package accepts: both differ from
# the course's pins (torch 2.14.1, torchvision 0.29.1, numpy 2.4.6).
COLAB_LIKE = {"torch": "2.8.0+cu126", "torchvision": "0.23.0+cu126", "numpy": "2.0.2", "matplotlib": "3.10.0",
              "pillow": "11.3.0", "tqdm": "4.67.1", "nbformat": "5.10.4", "pycocotools": "2.0.10", "scikit-image": "0.25.2"}
OLDEST = {**COLAB_LIKE, "torch": "2.4.0", "torchvision": "0.19.0", "numpy": "1.26.4"}


def _dry_run(venv: Path, source: Path, report: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--dry-run", "--report", str(report),
                           "--no-index", "--no-build-isolation", str(source)],
                          capture_output=True, text=True, timeout=300, cwd=report.parent)


@pytest.mark.parametrize("runtime", [COLAB_LIKE, OLDEST], ids=["colab-like", "oldest-supported"])
def test_installing_the_student_package_keeps_colabs_torch_and_numpy(public, tmp_path, runtime):
    """Colab stand-in: an environment whose torch/torchvision/numpy metadata differ from the course's pins.
    pip's dry run must install the student package and nothing else (no index: anything more would fail)."""
    pins = dict(r.split("==") for r in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"] if "==" in r)
    assert all(runtime[n] != pins[n] for n in ("torch", "torchvision", "numpy")), "the stand-in must differ from the pins"
    venv = colab_stand_in(tmp_path, runtime)
    proc = _dry_run(venv, _copy(public, tmp_path), tmp_path / "report.json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    installs = {i["metadata"]["name"]: i["metadata"]["version"] for i in json.loads((tmp_path / "report.json").read_text())["install"]}
    assert installs == {"dl4cv-lecture-utils": config_version(public)}, f"pip would install {installs}"

    # control: the course's own pyproject (exact pins) would have to replace the runtime's torch
    course = tmp_path / "course"
    course.mkdir()
    shutil.copy(ROOT / "pyproject.toml", course)
    shutil.copy(ROOT / "README.md", course)
    shutil.copytree(public / "lecture_utils", course / "lecture_utils")
    (course / "autograder").mkdir()
    (course / "autograder" / "__init__.py").write_text("")
    control = _dry_run(venv, course, tmp_path / "control.json")
    said = control.stdout + control.stderr
    assert control.returncode != 0 and "torch==" in said, said[-2000:]


def config_version(public: Path) -> str:
    return tomllib.loads((public / "pyproject.toml").read_text())["project"]["version"]


def test_publish_refuses_placeholders_unless_preview(tmp_path):
    assert config.placeholders_in_use() == ["GITHUB_ORG", "SUBMISSION_URL"], "this test expects the template's configuration"
    with pytest.raises(PublishRefused) as refused:
        publish(tmp_path / "public")
    message = str(refused.value)
    assert "GITHUB_ORG" in message and PLACEHOLDER_URL in message and "PREVIEW=1" in message
    assert not (tmp_path / "public").exists()
    proc = subprocess.run([sys.executable, "-m", "autograder.publish", "--out", str(tmp_path / "cli")],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2 and "refused, nothing written" in proc.stderr and not (tmp_path / "cli").exists()


def test_a_preview_says_the_instructor_gives_the_submission_link(public):
    readme = (public / "README.md").read_text()
    assert config.SUBMISSION_LINK_LATER in readme and PLACEHOLDER_URL not in readme and "Preview" in readme
    probe = subprocess.run([sys.executable, "-c", "from lecture_utils import config\nprint(config.submission_line('a1_pytorch'))"],
                           capture_output=True, text=True, cwd=public, env={"PATH": "/usr/bin:/bin"}, timeout=120)
    assert probe.returncode == 0, probe.stderr
    assert config.SUBMISSION_LINK_LATER in probe.stdout and PLACEHOLDER_URL not in probe.stdout
    for path in text_files(public):  # the placeholder URL remains only as the value config.PLACEHOLDERS names
        if PLACEHOLDER_URL in path.read_text():
            assert path.relative_to(public) == Path("lecture_utils/config.py")
            assert path.read_text().count(PLACEHOLDER_URL) == 1


def test_a_term_with_real_settings_publishes_them(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "GITHUB_ORG", "example-university")
    monkeypatch.setattr(config, "SUBMISSION_URL", "https://www.gradescope.com/courses/424242")
    out = publish(tmp_path / "public")
    assert (out / "lecture_utils" / "config.py").read_bytes() == (ROOT / "lecture_utils" / "config.py").read_bytes()
    readme = (out / "README.md").read_text()
    assert "(https://www.gradescope.com/courses/424242)" in readme and "Preview" not in readme
    assert "https://example-university.github.io/" in readme


def test_publishing_again_keeps_git_and_replaces_the_rest(public, tmp_path):
    out = tmp_path / "public"
    (out / ".git").mkdir(parents=True)
    (out / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (out / "stale.txt").write_text("from an older term")
    publish_preview(out)
    assert (out / ".git" / "HEAD").read_text() == "ref: refs/heads/main\n" and not (out / "stale.txt").exists()
    assert sorted(p.name for p in out.iterdir()) == sorted([".git", *(p.name for p in public.iterdir())])


def _workflow(public: Path) -> dict:
    return yaml.safe_load((public / ".github" / "workflows" / "pages.yml").read_text())


def _step(steps: list[dict], name: str) -> dict:
    return next(s for s in steps if s.get("name") == name)


def test_the_pages_workflow_builds_with_the_cache_and_deploys(public):
    flow = _workflow(public)
    assert flow["permissions"] == {"contents": "read", "pages": "write", "id-token": "write"}
    on = flow[True] if True in flow else flow["on"]  # YAML 1.1 reads the key `on` as a boolean
    assert on["push"]["branches"] == [config.GITHUB_BRANCH]
    steps = flow["jobs"]["build"]["steps"]
    uses = {s.get("uses", "").split("@")[0]: s for s in steps}
    assert uses["actions/cache"]["with"]["path"] == "book/_build/.jupyter_cache"
    assert uses["actions/upload-pages-artifact"]["with"]["path"] == "book/_build/html"
    assert _step(steps, "Install the student package with the book tools")["run"] == 'python -m pip install ".[book]"'
    assert _step(steps, "Build the book")["run"].startswith("jupyter-book build book")
    assert flow["jobs"]["deploy"]["steps"][0]["uses"].startswith("actions/deploy-pages@")
    assert flow["jobs"]["deploy"]["needs"] == "build"


@pytest.mark.slow
def test_the_workflows_commands_build_the_book_from_the_public_tree(public, tmp_path):
    """The workflow's install and build steps, run in the published tree with a fresh venv: the student
    package is installed from the tree (no index: the venv already has the libraries), then the book builds
    with every page executed. The execution cache is seeded from the course's book build when there is
    one, as the workflow restores its own."""
    tree = tmp_path / "tree"
    shutil.copytree(public, tree)
    cache = ROOT / "book" / "_build" / ".jupyter_cache"
    if cache.is_dir():
        shutil.copytree(cache, tree / "book" / "_build" / ".jupyter_cache")
    venv = fresh_venv(tmp_path)
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path), "PIP_NO_INDEX": "1", "PIP_NO_BUILD_ISOLATION": "0",
           "MPLBACKEND": "Agg", "PYDEVD_DISABLE_FILE_VALIDATION": "1"}
    steps = _workflow(public)["jobs"]["build"]["steps"]
    start = time.monotonic()
    for name in ("Install the student package with the book tools", "Build the book"):
        proc = subprocess.run(_step(steps, name)["run"], shell=True, cwd=tree, env=env, capture_output=True, text=True, timeout=3600)
        assert proc.returncode == 0, f"{name}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import lecture_utils; print(lecture_utils.__file__)"],
                           capture_output=True, text=True, cwd=tmp_path, env=env).stdout.strip()
    assert Path(where).resolve().is_relative_to(venv.resolve()), f"lecture_utils came from {where}, not the fresh venv"
    html = tree / "book" / "_build" / "html"
    page = (html / "assignments" / f"{ASSIGNMENT_IDS[0]}.html").read_text()
    assert config.SUBMISSION_LINK_LATER in page and PLACEHOLDER_URL not in page
    assert not find_leaks(solution_lines(), html.rglob("*.html"))
    print(f"book built from the public tree in {time.monotonic() - start:.0f} s")
