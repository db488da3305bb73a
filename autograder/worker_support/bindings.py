"""Running a student's function with some of the student's other functions bound to the grader's references
(a3, a4: the unit tests of a later part use reference versions of the earlier parts, so a mistake in an earlier
part costs that part's points only)."""
import sys


def call_with_bound(references: dict, fn, args, kwargs):
    """``fn(*args, **kwargs)`` with the names of ``references`` in the student's namespace temporarily bound to
    them; the student's own (or their absence) are put back afterwards."""
    namespace = sys.modules[STUDENT_MODULE].__dict__  # noqa: F821 - given by the worker
    missing = object()
    saved = {name: namespace.get(name, missing) for name in references}
    namespace.update(references)
    try:
        return fn(*args, **kwargs)
    finally:
        for name, value in saved.items():
            if value is missing:
                namespace.pop(name, None)
            else:
                namespace[name] = value
