"""Shared checks of the a4 hidden tests.

Every call of a graded function goes through ``call`` (``kit.calls``): the worker counts the library functions
that would do the function's job (``forbidden.toml``, as the notebook lists them)."""
from autograder.hidden_tests.kit.calls import GradedCalls
from autograder.hidden_tests.kit.checks import check_output  # noqa: F401 - the part tests import it from here

GRADED = GradedCalls("a4_one_stage")
call, student_vjp, check_forbidden = GRADED.call, GRADED.vjp, GRADED.watched


def with_references(student, helper_name, fn_name, helper_args, what):
    """The support helper ``helper_name(student.<fn_name>, *helper_args)`` in the worker: the student's function
    with the part 1-2 functions bound to references, watched for torchvision's detection models."""
    return GRADED.with_references(student, helper_name, student.__getattr__(fn_name).get(), *helper_args, what=what)
