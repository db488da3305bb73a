"""Helpers of the tests of the public repository (tests/test_publish.py, tests/test_book_colab_setup.py):
a published tree, virtual environments without the course package, a stand-in for a Colab runtime."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

COURSE_SITE = Path(sys.prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
# The course package's own entries in the course venv: a fresh venv must not see them.
PROJECT_ENTRIES = ("dl4cv", "__editable__", "lecture_utils", "autograder", "_virtualenv")
BUILD_TOOLS = ("pip", "setuptools", "_distutils_hack", "pkg_resources", "wheel")


def publish_preview(out: Path) -> Path:
    """The public tree as `make publish PREVIEW=1` writes it (the configuration holds placeholders here)."""
    from autograder.publish import publish

    return publish(out, preview=True)


def _venv_with(tmp: Path, name: str, entries) -> Path:
    """A venv whose site-packages sees only ``entries`` (symlinks into one folder, added by a .pth file)."""
    venv = tmp / name
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    deps = tmp / f"{name}-deps"
    deps.mkdir()
    for entry in entries:
        (deps / entry.name).symlink_to(entry)
    site = next((venv / "lib").glob("python*/site-packages"))
    (site / "course_deps.pth").write_text(f"{deps}\n")
    return venv


def fresh_venv(tmp: Path, name: str = "venv") -> Path:
    """A venv with the course venv's libraries (torch, Jupyter, Jupyter Book ...) but not the course package.

    The course venv's site-packages is mirrored by symlinks, leaving out the project's own entries
    (its dist-info, the editable-install finder) and .pth files: torch imports as in Colab,
    lecture_utils does not. Its bin/ gets a `jupyter-book` script, as pip would write one.
    """
    keep = [e for e in COURSE_SITE.iterdir()
            if not e.name.lower().startswith(PROJECT_ENTRIES) and not e.name.endswith(".pth")]
    venv = _venv_with(tmp, name, keep)
    script = venv / "bin" / "jupyter-book"
    script.write_text(f"#!{venv / 'bin' / 'python'}\nimport sys\nfrom jupyter_book.cli.main import main\nsys.exit(main())\n")
    script.chmod(0o755)
    return venv


def stub_distribution(folder: Path, name: str, version: str) -> None:
    """An installed-looking distribution: only its dist-info metadata (enough for pip's resolver)."""
    info = folder / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "INSTALLER").write_text("pip\n")
    (info / "RECORD").write_text("")


def colab_stand_in(tmp: Path, versions: dict[str, str]) -> Path:
    """A venv that looks like a Colab runtime to pip: stub distributions at ``versions`` and the build tools
    (pip, setuptools) of the course venv; nothing of the course venv's torch or NumPy."""
    stubs = tmp / "colab-stubs"
    for name, version in versions.items():
        stub_distribution(stubs, name, version)
    tools = [e for e in COURSE_SITE.iterdir() if e.name.split("-")[0] in BUILD_TOOLS]
    return _venv_with(tmp, "colab", [*tools, *stubs.iterdir()])
