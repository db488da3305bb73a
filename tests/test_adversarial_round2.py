"""Hostile submissions, round 2: replies that would exhaust the grader, NaN everywhere.

Each case gets exactly the honest score (0 for the exploit's functions), a clear message, and a
valid result; see also test_adversarial.py (round 1) and the mutants of the grading tests.
"""
import resource
import time

import pytest

from autograder.results import validate
from conftest import cell_by_id, part_points, solution_nb, with_cells

A1, A2, A3, A4, A5 = "a1_pytorch", "a2_detection_basics", "a3_two_stage", "a4_one_stage", "a5_segmentation"


def sol(assignment_id: str, gid: str) -> str:
    return cell_by_id(solution_nb(assignment_id), gid).source


def test_a_huge_python_reply_is_refused_before_it_is_unpickled(grade):
    """30 million Python ints (about 4 GiB once unpickled) are refused by size, quickly."""
    huge = sol(A1, "manual_step") + "\n_honest = manual_two_layer_step\ndef manual_two_layer_step(x, y, w1, w2, lr):\n    return list(range(30_000_000))\n"
    started, peak_before = time.monotonic(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    results = grade(with_cells(solution_nb(A1), {"manual_step": huge}), A1, parts=["manual_step"])
    elapsed, grown_mib = time.monotonic() - started, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before) / 1024
    assert results.score == 0
    outputs = " ".join(t.output for t in results.tests)
    assert "Python" in outputs and "return tensors" in outputs, outputs[:500]
    assert elapsed < 120, elapsed
    assert grown_mib < 1024, f"the grader process grew by {grown_mib:.0f} MiB"
    validate(results.to_gradescope())


def nan_everywhere(names: list[str]) -> str:
    """A cell wrapping each function so that every float it returns becomes NaN (shapes kept)."""
    return '''
import math as _math
def _nanify(value):
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return torch.full_like(value, float("nan"))
    if isinstance(value, float):
        return float("nan")
    if isinstance(value, (list, tuple)):
        return type(value)(_nanify(v) for v in value)
    if isinstance(value, dict):
        return {k: _nanify(v) for k, v in value.items()}
    return value
def _nan_wrapper(fn):
    def wrapped(*args, **kwargs):
        return _nanify(fn(*args, **kwargs))
    return wrapped
''' + "".join(f"{n} = _nan_wrapper({n})\n" for n in names)


# Functions whose results are floats, and the parts whose every point depends on them.
NAN_CASES = {
    A1: ("manual_step", ["manual_two_layer_step"], ["manual_step"]),
    A2: ("evaluation", ["box_iou", "box_area", "box_convert", "encode_boxes", "decode_boxes", "precision_recall", "average_precision",
                        "evaluate_detections", "single_object_loss"], ["box_ops", "box_coding", "ap", "evaluation"]),
    A3: ("roi_heads", ["roi_align", "roi_pool", "rpn_losses", "fastrcnn_loss", "postprocess_detections", "select_training_samples"],
         ["roi_ops", "roi_heads"]),
    A4: ("fcos_losses", ["sigmoid_focal_loss", "fcos_locations", "fcos_get_deltas", "fcos_apply_deltas", "fcos_centerness", "fcos_losses"],
         ["focal_loss", "fcos_losses"]),
    A5: ("panoptic_keypoints", ["nearest_upsample", "bed_of_nails_unpool", "max_unpool2d", "bilinear_upsample", "bicubic_upsample", "conv_transpose2d",
                                "conv2d_matrix", "heatmaps_to_keypoints"], ["upsampling", "transposed_conv", "panoptic_keypoints"]),
}
# Tests that do not compare those functions' values (op counts, modules): they keep their points.
NAN_EXEMPT = ("test_box_iou_is_vectorized", "test_label", "test_roi_ops_are_vectorized", "test_box_head", "test_fcos_losses_are_vectorized",
              "test_focal_loss_leaves_inputs_unchanged", "test_fcos_losses_dtype_and_inputs",
              "test_upsamplers_are_vectorized", "test_conv_transpose2d_is_vectorized", "test_panoptic", "test_keypoints_to_heatmap")


@pytest.mark.slow
@pytest.mark.parametrize("assignment_id", [A1, A2, A3, A4, A5])
def test_nan_results_earn_nothing(grade, assignment_id):
    """NaN (or a NaN metric) passes no comparison unless the reference is NaN at the same place."""
    last_cell, names, parts = NAN_CASES[assignment_id]
    nb = with_cells(solution_nb(assignment_id), {last_cell: sol(assignment_id, last_cell) + nan_everywhere(names)})
    results = grade(nb, assignment_id, parts=parts)
    passed = [t.name for t in results.tests if t.score > 0 and not t.name.startswith(NAN_EXEMPT)]
    assert not passed, passed
    if assignment_id not in (A3, A4, A5):  # a3's box head (a module, not wrapped), a4's op counts and dtypes, a5's integer outputs keep their points
        assert results.score == 0, [(t.name, t.score) for t in results.tests if t.score]
