"""The repository keeps its promises: pins agree, the documented commands exist, links are configured once."""
import re
import tomllib

from conftest import ROOT, ASSIGNMENT_IDS, solution_nb


def _pins_pyproject() -> dict[str, str]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    deps = data["project"]["dependencies"] + [d for group in data["project"]["optional-dependencies"].values() for d in group]
    own = data["project"]["name"] + "["  # an extra that includes another extra of the project (course includes grading)
    return dict(d.split("==") for d in deps if not d.startswith(own))


def _pins_environment() -> dict[str, str]:
    pins = re.findall(r"^\s*-\s*([A-Za-z0-9_.\-]+)==([^\s#]+)", (ROOT / "environment.yml").read_text(), flags=re.M)
    return dict(pins)


def test_pyproject_and_environment_pin_the_same_versions():
    assert _pins_pyproject() == _pins_environment()


def test_every_dependency_is_pinned_and_torch_pair_is_the_supported_one():
    pins = _pins_pyproject()
    assert pins["torch"] == "2.14.1" and pins["torchvision"] == "0.29.1"
    lock = dict(line.split("==") for line in (ROOT / "requirements-lock.txt").read_text().splitlines() if "==" in line and not line.startswith("#"))
    for name, version in pins.items():
        assert lock.get(name) == version or lock.get(name.replace("-", "_")) == version, f"{name}=={version} not in requirements-lock.txt"


def test_readme_and_ci_use_the_documented_commands():
    readme = (ROOT / "README.md").read_text()
    assert "make course" in readme and "make test" in readme
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    makefile = (ROOT / "Makefile").read_text()
    for target in ("course:", "book:", "release:", "autograder-bundle:", "test:", "test-fast:", "bench:", "clean:"):
        assert f"\n{target}" in makefile


def test_setup_cells_install_from_the_configured_repository():
    from lecture_utils.config import PIP_INSTALL_TARGET

    for assignment_id in ASSIGNMENT_IDS:
        setup = next(c for c in solution_nb(assignment_id).cells if "setup" in c.metadata.get("tags", []))
        assert f'"{PIP_INSTALL_TARGET}"' in setup.source, f"{assignment_id}: setup cell does not use lecture_utils.config.PIP_INSTALL_TARGET"


def test_colab_urls_point_into_the_configured_repository():
    from lecture_utils import config

    url = config.colab_url("assignments/a1_pytorch/a1_pytorch.ipynb")
    assert url == f"https://colab.research.google.com/github/{config.GITHUB_ORG}/{config.GITHUB_REPO}/blob/{config.GITHUB_BRANCH}/assignments/a1_pytorch/a1_pytorch.ipynb"
