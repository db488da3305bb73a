"""`make publish`: the public repository of the course, written into ``build/public/``.

It holds what students and readers use and nothing else: the book's sources and chapter notebooks
(with a GitHub Pages workflow that builds and deploys the book), the assignment releases, the
student package ``lecture_utils`` with its own ``pyproject.toml`` (version ranges, no pins), a
student README and a LICENSE. No solutions, no grader, no hidden tests, no course secret.

    python -m autograder.publish --out build/public [--preview]

Modules: :mod:`.tree` writes the tree, :mod:`.placeholders` refuses a term's configuration that
still holds the template's placeholders, :mod:`.privacy` checks the written tree, ``template/``
holds the files only the public repository has.
"""
from autograder.publish.placeholders import PublishRefused
from autograder.publish.tree import publish

__all__ = ["publish", "PublishRefused"]
