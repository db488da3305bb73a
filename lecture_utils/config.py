"""The one place that says where the course lives and where and by when work is submitted.

Every Colab link, launch button and setup cell reads these values, and so do the assignment pages of
the book and the notebooks' export cell. A course that moves to another GitHub organisation or
branch, or a new term with other due dates, changes them here (then `make release` and `make book`).
"""
from __future__ import annotations

# The PUBLIC repository that `make publish` writes (build/public/): book, releases and the student
# package (lecture_utils only). This private course repository is never pushed there.
GITHUB_ORG = "dl4cv-course"
GITHUB_REPO = "dl4cv-part3"
GITHUB_BRANCH = "main"

REPOSITORY_URL = f"https://github.com/{GITHUB_ORG}/{GITHUB_REPO}"
# What the Colab setup cell installs: the student package (lecture_utils only, version ranges that
# accept Colab's torch) from the public repository's pyproject.toml.
PIP_INSTALL_TARGET = f"git+{REPOSITORY_URL}@{GITHUB_BRANCH}"

# Where students upload `<assignment>_submission.ipynb` (the course's Gradescope page; set the real
# course number each term) and by when, per assignment id (the deadline's time zone is part of it).
# None: not known yet; pages and the export cell then say that the instructor gives the link
# (`make publish PREVIEW=1` publishes so while the URL is still the placeholder).
SUBMISSION_SITE = "Gradescope"
SUBMISSION_URL: str | None = "https://www.gradescope.com/courses/1000000"
SUBMISSION_LINK_LATER = "your instructor will give you the submission link"
DUE_DATES = {
    "a1_pytorch": "Friday 27 March 2026, 23:59 (UTC+8)",
    "a2_detection_basics": "Friday 17 April 2026, 23:59 (UTC+8)",
    "a3_two_stage": "Friday 8 May 2026, 23:59 (UTC+8)",
    "a4_one_stage": "Friday 22 May 2026, 23:59 (UTC+8)",
    "a5_segmentation": "Friday 12 June 2026, 23:59 (UTC+8)",
}

# The values this template ships with: `make publish` refuses to publish a term while a setting still
# holds its placeholder (unless told it is a preview).
PLACEHOLDERS = {
    "GITHUB_ORG": "dl4cv-course",
    "SUBMISSION_URL": "https://www.gradescope.com/courses/1000000",
}


def placeholders_in_use() -> list[str]:
    """The settings of this module that still hold their placeholder value, e.g. ``["GITHUB_ORG"]``."""
    return [name for name, value in PLACEHOLDERS.items() if globals()[name] == value]


# The first code cell of every notebook that imports lecture_utils (chapter pages and assignments),
# written into them by book/_ext/sync_sources.py. In Colab it pip-installs the student package once
# (later runs find lecture_utils and skip pip); everywhere it prints one line saying what it did
# (lecture_utils.colab.setup), and in Colab it warns when no GPU is attached. Outside Colab it
# installs nothing: a local student installs the package once (student README). The environment
# variable DL4CV_PIP_INSTALL replaces the pip arguments and forces the install outside Colab: the
# tests' local stand-in for Colab (install source pointed at a published tree, no internet).
SETUP_CELL = f'''\
# Setup: installs the course helpers (lecture_utils) in Colab, once. Generated from lecture_utils/config.py.
import importlib, importlib.util, os, subprocess, sys

COURSE_PIP = "{PIP_INSTALL_TARGET}"
installed_from = None
if importlib.util.find_spec("lecture_utils") is None:
    if "google.colab" not in sys.modules and "DL4CV_PIP_INSTALL" not in os.environ:
        raise ModuleNotFoundError(f"lecture_utils is not installed in this Python: run `pip install {{COURSE_PIP}}`, then restart the kernel")
    pip_args = os.environ.get("DL4CV_PIP_INSTALL", COURSE_PIP).split()
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", *pip_args], check=True)
    importlib.invalidate_caches()
    installed_from = " ".join(pip_args)
import lecture_utils.colab

print(lecture_utils.colab.setup(installed_from))'''


def colab_url(path_in_repo: str) -> str:
    """The "Open in Colab" URL of a notebook given by its path in the repository."""
    return f"https://colab.research.google.com/github/{GITHUB_ORG}/{GITHUB_REPO}/blob/{GITHUB_BRANCH}/{path_in_repo}"


def submission_line(assignment_id: str) -> str:
    """Where and by when to upload an assignment, in one sentence (plain text)."""
    due = DUE_DATES.get(assignment_id)
    when = f", due {due}" if due else ""
    where = f"({SUBMISSION_URL})" if SUBMISSION_URL else f"({SUBMISSION_LINK_LATER})"
    return f"Upload {assignment_id}_submission.ipynb to {SUBMISSION_SITE} {where}, assignment {assignment_id}{when}."
