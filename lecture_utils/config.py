"""The one place that says where the course lives.

Every Colab link, launch button and setup cell reads these values. A course that
moves to another GitHub organisation or branch changes them here (and rebuilds).
"""
from __future__ import annotations

GITHUB_ORG = "dl4cv-course"
GITHUB_REPO = "dl4cv-part3"
GITHUB_BRANCH = "main"

REPOSITORY_URL = f"https://github.com/{GITHUB_ORG}/{GITHUB_REPO}"
# What the Colab setup cell installs: the student helpers straight from the repository.
PIP_INSTALL_TARGET = f"git+{REPOSITORY_URL}@{GITHUB_BRANCH}"


def colab_url(path_in_repo: str) -> str:
    """The "Open in Colab" URL of a notebook given by its path in the repository."""
    return f"https://colab.research.google.com/github/{GITHUB_ORG}/{GITHUB_REPO}/blob/{GITHUB_BRANCH}/{path_in_repo}"
