"""The one place that says where the course lives and where and by when work is submitted.

Every Colab link, launch button and setup cell reads these values, and so do the assignment pages of
the book and the notebooks' export cell. A course that moves to another GitHub organisation or
branch, or a new term with other due dates, changes them here (then `make release` and `make book`).
"""
from __future__ import annotations

GITHUB_ORG = "dl4cv-course"
GITHUB_REPO = "dl4cv-part3"
GITHUB_BRANCH = "main"

REPOSITORY_URL = f"https://github.com/{GITHUB_ORG}/{GITHUB_REPO}"
# What the Colab setup cell installs: the student helpers straight from the repository.
PIP_INSTALL_TARGET = f"git+{REPOSITORY_URL}@{GITHUB_BRANCH}"

# Where students upload `<assignment>_submission.ipynb` (the course's Gradescope page; set the real
# course number each term) and by when, per assignment id (the deadline's time zone is part of it).
SUBMISSION_SITE = "Gradescope"
SUBMISSION_URL = "https://www.gradescope.com/courses/1000000"
DUE_DATES = {
    "a1_pytorch": "Friday 27 March 2026, 23:59 (UTC+8)",
    "a2_detection_basics": "Friday 17 April 2026, 23:59 (UTC+8)",
    "a3_two_stage": "Friday 8 May 2026, 23:59 (UTC+8)",
    "a4_one_stage": "Friday 22 May 2026, 23:59 (UTC+8)",
    "a5_segmentation": "Friday 12 June 2026, 23:59 (UTC+8)",
}

# The first code cell of every notebook that imports lecture_utils (chapter pages and assignments),
# written into them by book/_ext/sync_sources.py: in Colab it pip-installs the helpers. The
# environment variable DL4CV_PIP_INSTALL replaces the pip arguments and forces the install outside
# Colab: the tests' local stand-in for Colab (install source pointed at the checkout, no internet).
SETUP_CELL = f'''\
# Setup: in Colab, install the course helpers (lecture_utils). Generated from lecture_utils/config.py.
import importlib.util, os, subprocess, sys

COURSE_PIP = "{PIP_INSTALL_TARGET}"
if ("google.colab" in sys.modules or "DL4CV_PIP_INSTALL" in os.environ) and importlib.util.find_spec("lecture_utils") is None:
    pip_args = os.environ.get("DL4CV_PIP_INSTALL", COURSE_PIP).split()
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", *pip_args], check=True)
    importlib.invalidate_caches()'''


def colab_url(path_in_repo: str) -> str:
    """The "Open in Colab" URL of a notebook given by its path in the repository."""
    return f"https://colab.research.google.com/github/{GITHUB_ORG}/{GITHUB_REPO}/blob/{GITHUB_BRANCH}/{path_in_repo}"


def submission_line(assignment_id: str) -> str:
    """Where and by when to upload an assignment, in one sentence (plain text)."""
    due = DUE_DATES.get(assignment_id)
    when = f", due {due}" if due else ""
    return f"Upload {assignment_id}_submission.ipynb to {SUBMISSION_SITE} ({SUBMISSION_URL}), assignment {assignment_id}{when}."
