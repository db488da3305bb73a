"""End-to-end grading of a1_pytorch: full marks, zero, partial credit, wrong code, broken files."""
import json
import subprocess
import sys
import zipfile

import nbformat
import pytest

from autograder.results import validate
from conftest import ROOT, cell_by_id, points_by_test, release_nb, solution_nb, with_cells

A1 = "a1_pytorch"
# Which tests each graded cell of a1 is responsible for (by test-name prefix), and their points.
A1_CELL_TESTS = {
    "manual_step": (("test_manual_step",), 15),
    "sigmoid": (("test_sigmoid",), 8),
    "linear_function": (("test_linear",), 12),
    "smooth_l1_function": (("test_smooth_l1",), 8),
    "modules": (("test_two_layer_net", "test_parallel_block", "test_build_parallel_model"), 15),
    "optimizers": (("test_sgd", "test_adam"), 24),
    "training": (("test_train_model", "test_detection_collate"), 13),
    "graphs": (("test_capture",), 5),
}


def test_cell_map_covers_the_suite(grade):
    results = grade(release_nb(A1))
    names = points_by_test(results)
    owned = [n for n in names if any(n.startswith(p) for prefixes, _ in A1_CELL_TESTS.values() for p in prefixes)]
    assert sorted(owned) == sorted(names)
    assert sum(t.max_score for t in results.tests) == 100
    assert sum(pts for _, pts in A1_CELL_TESTS.values()) == 100


def test_solution_scores_full_marks(grade):
    results = grade(ROOT / "solutions" / A1 / f"{A1}.ipynb")
    failed = [(t.name, t.output) for t in results.tests if t.status != "passed"]
    assert results.score == 100, failed
    assert results.execution_time < 60
    validate(results.to_gradescope())


def test_untouched_release_scores_zero_with_clear_feedback(grade):
    results = grade(ROOT / "assignments" / A1 / f"{A1}.ipynb")
    assert results.score == 0
    assert all("NotImplementedError" in t.output for t in results.tests)
    validate(results.to_gradescope())


@pytest.mark.parametrize("grade_id", ["manual_step", "optimizers", "training", pytest.param("sigmoid", marks=pytest.mark.slow), pytest.param("graphs", marks=pytest.mark.slow)])
def test_one_solved_part_scores_exactly_its_points(grade, grade_id):
    nb = with_cells(release_nb(A1), {grade_id: solution_nb(A1)})
    results = grade(nb)
    prefixes, points = A1_CELL_TESTS[grade_id]
    earned = {n: p for n, p in points_by_test(results).items() if p}
    assert results.score == points, earned
    assert all(n.startswith(prefixes) for n in earned)


def _mutate(cell_source: str, old: str, new: str) -> str:
    assert old in cell_source, f"mutation anchor not found: {old!r}"
    return cell_source.replace(old, new)


def _sol(grade_id):
    return cell_by_id(solution_nb(A1), grade_id).source


# Each mutant: {cell: (old, new)} and the test-name prefixes that must lose points.
MUTANTS = {
    "subtle-1": (
        {
            "manual_step": ("    pre_act = x.mm(w1)", "    w1 = w1.detach().requires_grad_()\n    (x.mm(w1).clamp(min=0).mm(w2) - y).pow(2).sum().backward()\n    pre_act = x.mm(w1.detach())"),
            "sigmoid": ("        ctx.save_for_backward(out)", "        ctx.save_for_backward(x)"),
            "linear_function": ("        if ctx.needs_input_grad[0]:", "        if True:"),
            "smooth_l1_function": ("        grad_target = -grad if ctx.needs_input_grad[1] else None", "        grad_target = None"),
            "optimizers": ('state["momentum_buffer"].mul_(group["momentum"]).add_(d_p)', 'state["momentum_buffer"].mul_(group["momentum"]).add_(d_p, alpha=1 - group["momentum"])'),
            "training": ("            optimizer.zero_grad()\n", ""),
        },
        ["test_manual_step_uses_no_autograd", "test_sigmoid_backward", "test_sigmoid_gradcheck", "test_linear_needs_input_grad",
         "test_smooth_l1_backward", "test_smooth_l1_gradcheck", "test_sgd_momentum_weight_decay", "test_train_model_sgd_momentum"],
    ),
    "subtle-2": (
        {
            "optimizers": ('denom = (state["exp_avg_sq"].sqrt() / math.sqrt(bias_correction2)).add_(group["eps"])',
                           'denom = (state["exp_avg_sq"] / bias_correction2).add(group["eps"]).sqrt()'),
            "training": ("            running += batch_loss.item()\n            batches += 1",
                         "            running += batch_loss.item() * len(inputs)\n            batches += len(inputs)"),
            "modules": ("        return (self.linear1(x) * self.linear2(x)).clamp(min=0)", "        return self.linear1(x) * self.linear2(x)"),
        },
        ["test_adam_eps_placement", "test_train_model_uneven_batches", "test_parallel_block", "test_build_parallel_model"],
    ),
    "subtle-3": (
        {
            "optimizers": ('                    grad = grad.add(p, alpha=group["weight_decay"])\n', '                    p.mul_(1 - group["lr"] * group["weight_decay"])\n'),
            "training": ("    images = torch.stack([image for image, _ in batch], dim=0)", "    images = torch.stack([image for image, _ in batch], dim=0)\n    batch = sorted(batch, key=lambda b: len(b[1]['boxes']))"),
            "linear_function": ("            grad_bias = flat_grad.sum(dim=0)", "            grad_bias = flat_grad.mean(dim=0)"),
        },
        ["test_adam_weight_decay_and_betas", "test_adam_param_groups_and_missing_grads", "test_detection_collate_variable_boxes", "test_linear_backward", "test_linear_gradcheck"],
    ),
    "subtle-4": (
        {
            "optimizers": ('                state["step"] += 1\n', '                state["step"] += 1\n                self.state["global_step"] = self.state.get("global_step", 0) + 1\n                state["step"] = max(state["step"], self.state["global_step"] // max(1, sum(len(g["params"]) for g in self.param_groups)))\n'),
            "manual_step": ("    grad_pre = grad_out.mm(w2.t()) * (pre_act > 0).to(pre_act.dtype)", "    grad_pre = grad_out.mm(w2.t())"),
        },
        ["test_adam_param_groups_and_missing_grads", "test_manual_step_matches_autograd", "test_manual_step_dead_relu_units"],
    ),
}


@pytest.mark.parametrize("mutant", sorted(MUTANTS))
def test_subtly_wrong_implementations_lose_exactly_their_points(grade, mutant):
    changes, must_fail = MUTANTS[mutant]
    nb = with_cells(solution_nb(A1), {gid: _mutate(_sol(gid), old, new) for gid, (old, new) in changes.items()})
    results = grade(nb)
    failed = sorted(t.name.split(":")[0] for t in results.tests if t.status != "passed")
    missing = [name for name in must_fail if name not in failed]
    assert not missing, f"these tests should catch the mutant but passed: {missing}"
    touched = tuple(p for gid in changes for p in A1_CELL_TESTS[gid][0])
    collateral = [n for n in failed if not n.startswith(touched)]
    assert not collateral, f"tests of untouched functions failed: {collateral}"


ALTERNATIVES = {
    "sigmoid": ("        out = 1.0 / (1.0 + torch.exp(-x))", "        out = torch.sigmoid(x)"),
    "linear_function": ("        out = x.matmul(weight.t())", "        out = torch.einsum('...i,oi->...o', x, weight)"),
    "optimizers": ('                        state["momentum_buffer"] = d_p.clone()',
                   '                        state["momentum_buffer"] = torch.zeros_like(p).add_(d_p)'),
    "training": ("            optimizer.zero_grad()\n            batch_loss = loss_fn(model(inputs), targets)\n            batch_loss.backward()\n            optimizer.step()",
                 "            batch_loss = loss_fn(model(inputs), targets)\n            batch_loss.backward()\n            optimizer.step()\n            optimizer.zero_grad(set_to_none=False)"),
    "graphs": ("    exported = torch.export.export(model.eval(), (example_input,))\n    return exported.module()", "    return torch.fx.symbolic_trace(model.eval())"),
    "manual_step": ("    grad_pre = grad_out.mm(w2.t()) * (pre_act > 0).to(pre_act.dtype)", "    grad_pre = grad_out.mm(w2.t())\n    grad_pre[pre_act < 0] = 0"),
}


def test_correct_alternative_implementations_score_full_marks(grade):
    nb = with_cells(solution_nb(A1), {gid: _mutate(_sol(gid), old, new) for gid, (old, new) in ALTERNATIVES.items()})
    results = grade(nb)
    assert results.score == 100, [(t.name, t.output) for t in results.tests if t.status != "passed"]


# ----------------------------------------------------------------------------- broken submissions
def _assert_zero(results, reason_part):
    assert results.score == 0
    assert reason_part in results.output
    assert "Traceback" not in results.output.split("\n")[0]
    validate(results.to_gradescope())


def test_not_json_gives_zero_with_reason(grade, tmp_path):
    bad = tmp_path / "broken.ipynb"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n binary garbage \x00\xff")
    _assert_zero(grade(bad), "not valid JSON")


def test_nbformat_3_gives_zero_with_reason(grade, tmp_path):
    old = tmp_path / "old.ipynb"
    old.write_text(json.dumps({"nbformat": 3, "nbformat_minor": 0, "metadata": {}, "worksheets": [{"cells": []}]}))
    _assert_zero(grade(old), "notebook format 3")


def test_notebook_without_cells_gives_zero_with_reason(grade):
    _assert_zero(grade(nbformat.v4.new_notebook()), "no graded cells found")


def test_missing_graded_cell_loses_only_that_part(grade):
    nb = solution_nb(A1)
    nb.cells = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") != "optimizers"]
    results = grade(nb)
    assert results.score == 100 - 24
    assert "cell 'optimizers' is missing" in results.output


def test_cell_with_lost_metadata_is_found_by_its_first_line(grade):
    nb = solution_nb(A1)
    cell_by_id(nb, "graphs").metadata = {}
    results = grade(nb)
    assert results.score == 100
    assert "found by its first line" in results.output


def test_syntax_error_in_a_cell_is_reported_and_costs_that_cell(grade):
    nb = with_cells(solution_nb(A1), {"sigmoid": _sol("sigmoid") + "\ndef broken(:\n    pass\n"})
    results = grade(nb)
    assert results.score == 100 - 8
    assert "cell 'sigmoid' has a syntax error" in results.output


def test_release_with_syntax_error_and_raise_at_import_gives_zero(grade):
    nb = with_cells(release_nb(A1), {"sigmoid": "def broken(:\n", "manual_step": "raise RuntimeError('boom at import')\n"})
    results = grade(nb)
    assert results.score == 0
    assert "RuntimeError: boom at import" in results.output and "syntax error" in results.output


def test_raise_at_import_in_the_first_cell_keeps_the_other_cells(grade):
    nb = with_cells(solution_nb(A1), {"manual_step": "raise ValueError('stop')\n" + _sol("manual_step")})
    results = grade(nb)
    assert results.score == 100 - 15
    assert "cell 'manual_step' raised an error" in results.output


def test_student_edits_to_metadata_do_not_run_extra_cells(grade):
    nb = solution_nb(A1)
    hostile = nbformat.v4.new_code_cell("raise SystemExit('this cell must never run')")
    hostile.metadata["nbgrader"] = {"grade": False, "solution": True, "grade_id": "my_extra_cell", "locked": False}
    nb.cells.insert(0, hostile)
    setup = next(c for c in nb.cells if "preamble" in c.metadata.get("tags", []))
    setup.source = "raise SystemExit('the preamble comes from the release, not from the submission')"
    results = grade(nb)
    assert results.score == 100, results.output


def test_zip_and_py_submissions(grade, tmp_path):
    sol = ROOT / "solutions" / A1 / f"{A1}.ipynb"
    archive = tmp_path / "submission.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(sol, f"student/{A1}.ipynb")
    assert grade(archive).score == 100
    import jupytext

    script = tmp_path / "submission.py"
    jupytext.write(nbformat.read(sol, as_version=4), script, fmt="py:percent")
    assert grade(script).score == 100


def test_cli_grades_and_writes_valid_results_json(tmp_path):
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, "-m", "autograder", "grade", "--assignment", A1, str(ROOT / "assignments" / A1 / f"{A1}.ipynb"), "--out", str(out)],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "0 / 100 points" in proc.stdout
    data = json.loads(out.read_text())
    validate(data)
    assert data["score"] == 0 and data["max_score"] == 100 and len(data["tests"]) > 20
