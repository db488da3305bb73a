"""The grading kit: the forbidden-call tables (data) are well-formed and name real functions, and the worker's
support modules load in the order the manifests give, each seeing what it uses."""
import builtins
import importlib.util
import symtable
import sys

import pytest

from autograder import assignments
from autograder.hidden_tests.kit.calls import GradedCalls, Rule
from autograder.notebook import graded_cells
from autograder.worker_main import STUDENT_MODULE, GraderSupportError, Worker, import_path
from conftest import release_nb

RELEASED = [a.id for a in assignments.all_assignments()]
WITH_TABLES = [a for a in RELEASED if (assignments.get(a).tests_dir / "forbidden.toml").exists()]


@pytest.fixture
def worker():
    """A worker object in this process (its student namespace removed afterwards)."""
    saved = sys.modules.get(STUDENT_MODULE)
    yield Worker()
    if saved is None:
        sys.modules.pop(STUDENT_MODULE, None)
    else:
        sys.modules[STUDENT_MODULE] = saved


@pytest.mark.parametrize("assignment_id", WITH_TABLES)
def test_forbidden_table_names_graded_functions_and_real_paths(assignment_id):
    """Every function of forbidden.toml is defined in a graded cell of the release; every forbidden Python path
    resolves (a misspelt path would never be counted) where its package is installed."""
    graded = GradedCalls(assignment_id)
    source = "\n".join(cell.stub for cell in graded_cells(release_nb(assignment_id)))
    for name in graded.rules:
        assert f"def {name}(" in source or f"class {name}(" in source, f"{name} is not defined in a graded cell of {assignment_id}"
    rules = [*graded.rules.values(), graded.models]
    for path in sorted({p for rule in rules for p in rule.calls}):
        if importlib.util.find_spec(path.split(".")[0]) is not None:
            assert callable(import_path(path)), path


def test_a_bare_name_must_be_a_group():
    assert Rule.parse({"calls": ["roi"]}, {"roi": ["torchvision.ops.roi_align"]}).calls == ("torchvision.ops.roi_align",)
    with pytest.raises(ValueError, match="neither groups"):
        Rule.parse({"calls": ["roi_op"]}, {"roi": ["torchvision.ops.roi_align"]})
    with pytest.raises(ValueError, match="unknown keys"):
        Rule.parse({"call": ["torch.add"]}, {})


def test_support_modules_see_earlier_ones_and_cannot_redefine_them(worker):
    worker.load_support([("grader.first", "def one():\n    return 1\n"),
                         ("grader.second", "import sys\n\ndef two():\n    return one() + 1\n\ndef namespace():\n    return sys.modules[STUDENT_MODULE]\n")])
    assert worker.support["two"]() == 2
    assert worker.support["namespace"]() is worker.module
    with pytest.raises(GraderSupportError, match="redefines 'one'"):
        worker.load_support([("grader.third", "def one():\n    return 3\n")])


@pytest.mark.parametrize("assignment_id", RELEASED)
def test_manifest_support_modules_load_and_resolve_every_global(assignment_id, worker):
    """Each support module, loaded in the manifest's order, finds every global name its functions use (its own,
    the earlier modules', the worker's or a builtin): a module listed too early fails here, not while grading."""
    a = assignments.get(assignment_id)
    assert a.support[0] == "worker_support/common.py"
    for name, source in a.support_sources():
        worker.load_support([(name, source)])
        module_globals = {*worker.support, "STUDENT_MODULE", "import_path", *dir(builtins)}
        table = symtable.symtable(source, name, "exec")
        module_globals |= {s.get_name() for s in table.get_symbols() if s.is_assigned() or s.is_imported()}
        stack, missing = list(table.get_children()), set()
        while stack:
            scope = stack.pop()
            stack.extend(scope.get_children())
            missing |= {s.get_name() for s in scope.get_symbols() if s.is_global() and s.is_referenced() and s.get_name() not in module_globals}
        assert not missing, f"{name} uses {sorted(missing)}, defined by no module loaded before it"


def test_training_sets_are_rendered_once_and_handed_out_as_copies():
    """counterfactual.training_set renders a set once per process (same secret-derived seed, same images) and gives
    each caller its own copies: a caller that changes them changes nobody else's."""
    import torch

    from autograder.hidden_tests.kit import counterfactual

    first = counterfactual.training_set("kit-test/cache", 6, 64, min_objects=1, max_objects=2)
    first[0].zero_()
    first[1][0]["boxes"].fill_(-1.0)
    again = counterfactual.training_set("kit-test/cache", 6, 64, min_objects=1, max_objects=2)
    assert counterfactual._rendered.cache_info().hits >= 1
    assert again[0].dtype == torch.uint8 and again[0].shape == (6, 3, 64, 64) and again[0].any()
    assert set(again[1][0]) == {"boxes", "labels"} and bool((again[1][0]["boxes"] >= 0).all())
    other = counterfactual.training_set("kit-test/another", 6, 64, min_objects=1, max_objects=2)
    assert not torch.equal(other[0], again[0])


def test_judge_checks_that_renamed_classes_are_followed():
    """With the score against the true classes given, judge fails a model that matches them about as well as (or
    better than) the renamed classes it was trained on, even above the bar and the controls, and says both numbers;
    a model that follows the renaming passes, and the feedback shows both scores."""
    from autograder.hidden_tests.kit.controls import RENAMED_MARGIN, judge
    from autograder.testing import GradingFailure

    recorded = []
    args = dict(metric="COCO AP50", bar=0.6, min_drop=0.2, n_images=64, what="detector")
    judge(lambda k, v: recorded.append((k, v)), (0.8, 0.1, 0.0), None, true_classes=0.75 - RENAMED_MARGIN, **args)
    assert "against the true classes 0.550" in dict(recorded)["feedback"]
    with pytest.raises(GradingFailure, match=r"0\.605 against the renamed classes .* but 1\.000 against the shapes' true classes"):
        judge(lambda k, v: None, (0.605, 0.0, 0.0), None, true_classes=1.0, **args)
    judge(lambda k, v: None, (0.605, 0.0, 0.0), None, **args)  # without a true-class score: the bar and controls only
