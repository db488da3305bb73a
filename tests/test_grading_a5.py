"""End-to-end grading of a5_segmentation: subtly wrong code loses points, library calls that do the exercise get
nothing, correct alternatives keep full marks, and models that do not learn get nothing from the trained tests
(solution 100, release 0, one part alone: test_grading_assignments.py)."""
import pytest

from conftest import assert_mutant_loses_points, changed_cells, replace_bodies, solution_nb, with_cells

A5 = "a5_segmentation"
TRAINED = {"fcn": "test_trained_fcn_reaches_miou", "mask_rcnn": "test_trained_mask_rcnn_reaches_mask_ap50"}


def replaced(gid, *pairs):
    return replace_bodies(A5, gid, *pairs)


# ----------------------------------------------------------------------------- other implementations
# bilinear as one weighted sum of four gathered corners (2-D at once, not separable passes)
BILINEAR_FOUR_CORNERS = '''    (out_h, out_w), (r_h, r_w) = _output_size_and_scales(input, size, scale_factor, align_corners)
    in_h, in_w = input.shape[-2:]
    y = _source_positions(out_h, r_h, align_corners, True, input.dtype, input.device)
    x = _source_positions(out_w, r_w, align_corners, True, input.dtype, input.device)
    y0 = y.floor().long().clamp(0, in_h - 1)
    x0 = x.floor().long().clamp(0, in_w - 1)
    y1, x1 = (y0 + 1).clamp(max=in_h - 1), (x0 + 1).clamp(max=in_w - 1)
    wy, wx = (y - y0.to(y.dtype))[:, None], (x - x0.to(x.dtype))[None, :]
    return (input[..., y0[:, None], x0[None, :]] * (1 - wy) * (1 - wx) + input[..., y0[:, None], x1[None, :]] * (1 - wy) * wx
            + input[..., y1[:, None], x0[None, :]] * wy * (1 - wx) + input[..., y1[:, None], x1[None, :]] * wy * wx)
'''

# transposed convolution as a convolution: dilate the input by the stride, pad by k - 1 - p, flip the kernel
CONV_TRANSPOSE_BY_DILATION = '''    (s_h, s_w), (p_h, p_w), (o_h, o_w) = _pair2(stride), _pair2(padding), _pair2(output_padding)
    n, c_in, h, w = input.shape
    _, c_out, k_h, k_w = weight.shape
    dilated = input.new_zeros((n, c_in, (h - 1) * s_h + 1, (w - 1) * s_w + 1))
    dilated[..., ::s_h, ::s_w] = input
    dilated = F.pad(dilated, (k_w - 1, k_w - 1 + o_w, k_h - 1, k_h - 1 + o_h))
    flipped = weight.flip(-1, -2).transpose(0, 1)
    out = F.conv2d(dilated, flipped)
    out = out[..., p_h:out.shape[-2] - p_h, p_w:out.shape[-1] - p_w]
    return out if bias is None else out + bias[None, :, None, None]
'''

# the matrix one entry per (output pixel, tap), with loops (speed is not graded here)
CONV_MATRIX_BY_LOOPS = '''    h, w = _pair2(input_size)
    (s_h, s_w), (p_h, p_w) = _pair2(stride), _pair2(padding)
    c_out, c_in, k_h, k_w = weight.shape
    out_h, out_w = (h + 2 * p_h - k_h) // s_h + 1, (w + 2 * p_w - k_w) // s_w + 1
    C = weight.new_zeros((c_out * out_h * out_w, c_in * h * w))
    for o in range(c_out):
        for i in range(out_h):
            for j in range(out_w):
                for u in range(k_h):
                    for v in range(k_w):
                        y, x = i * s_h - p_h + u, j * s_w - p_w + v
                        if 0 <= y < h and 0 <= x < w:
                            for c in range(c_in):
                                C[(o * out_h + i) * out_w + j, (c * h + y) * w + x] = weight[o, c, u, v]
    return C
'''

# mIoU class by class from boolean masks
MIOU_PER_CLASS = '''    pred, target = pred.flatten(), target.flatten()
    if ignore_index is not None:
        pred, target = pred[target != ignore_index], target[target != ignore_index]
    ious = []
    for c in range(num_classes):
        p, t = pred == c, target == c
        union = (p | t).sum()
        if union > 0:
            ious.append((p & t).sum().double() / union.double())
    return torch.stack(ious).mean() if ious else torch.tensor(float("nan"), dtype=torch.float64)
'''

# mask IoU with einsum and a clamp instead of where
MASK_IOU_EINSUM = '''    a, b = masks1.bool().flatten(1).double(), masks2.bool().flatten(1).double()
    inter = torch.einsum("np,mp->nm", a, b)
    union = a.sum(1, keepdim=True) + b.sum(1) - inter
    return (inter / union.clamp(min=1)).float()
'''


@pytest.mark.slow
def test_a5_correct_alternatives_keep_full_marks(grade):
    """bilinear from four gathered corners, transposed convolution by dilation + F.conv2d, the conv matrix entry by entry,
    mIoU class by class, mask IoU with einsum (the trained tests are left out: they train)."""
    changes = {
        "upsampling": replaced("upsampling", ("def bilinear_upsample(", BILINEAR_FOUR_CORNERS)),
        "transposed_conv": replaced("transposed_conv", ("def conv_transpose2d(", CONV_TRANSPOSE_BY_DILATION), ("def conv2d_matrix(", CONV_MATRIX_BY_LOOPS)),
        "fcn": replaced("fcn", ("def mean_iou(", MIOU_PER_CLASS)),
        "mask_rcnn": replaced("mask_rcnn", ("def mask_iou(", MASK_IOU_EINSUM)),
    }
    results = grade(with_cells(solution_nb(A5), changes), A5, parts=sorted(changes), skip=set(TRAINED.values()))
    assert results.tests and all(t.status == "passed" for t in results.tests), [(t.name, t.output) for t in results.tests if t.status != "passed"]


# Each mutant: {cell: change} and {test that must fail: text its feedback must contain (or "")}. Trained tests run
# only where a mutant touches what they measure (they take minutes), so most mutants are graded without them.
MUTANTS = {
    # the align_corners=True scale for both conventions; bicubic with Keys' A = -0.5
    "bilinear-always-align-corners+bicubic-a-minus-half": (
        {"upsampling": [("    if align_corners:\n        scales = ", "    if True:\n        scales = "), ("def _cubic_weights(t, A=-0.75):", "def _cubic_weights(t, A=-0.5):")]},
        {"test_bilinear_upsample_matches_interpolate": "align_corners=False", "test_bicubic_upsample_matches_interpolate": ""}),
    # max unpooling to the default size whatever output_size says; nearest rounding instead of flooring
    "max-unpool-ignores-output-size+nearest-rounds": (
        {"upsampling": [("    if output_size is not None:\n        out_h, out_w", "    if False:\n        out_h, out_w"),
                        ("(torch.arange(out_h, dtype=torch.float32, device=input.device) * r_h).floor()",
                         "(torch.arange(out_h, dtype=torch.float32, device=input.device) * r_h).round()")]},
        {"test_max_unpool2d_matches_torch": "", "test_nearest_upsample_matches_interpolate": "nearest_upsample"}),
    # bilinear by F.interpolate; transposed convolution by F.conv_transpose2d
    "library-calls": (
        {"upsampling": ("    (out_h, out_w), (r_h, r_w) = _output_size_and_scales(input, size, scale_factor, align_corners)\n    in_h, in_w = input.shape[-2:]\n    y0, y1, ly",
                        "    return F.interpolate(input, size, scale_factor, mode='bilinear', align_corners=align_corners)\n"
                        "    (out_h, out_w), (r_h, r_w) = _output_size_and_scales(input, size, scale_factor, align_corners)\n    in_h, in_w = input.shape[-2:]\n    y0, y1, ly"),
         "transposed_conv": ("    (s_h, s_w), (p_h, p_w), (o_h, o_w) = _pair2(stride), _pair2(padding), _pair2(output_padding)\n    n, c_in, h, w = input.shape",
                             "    return F.conv_transpose2d(input, weight, bias, stride, padding, output_padding)\n"
                             "    (s_h, s_w), (p_h, p_w), (o_h, o_w) = _pair2(stride), _pair2(padding), _pair2(output_padding)\n    n, c_in, h, w = input.shape")},
        {"test_bilinear_upsample_matches_interpolate": "torch.nn.functional.interpolate: writing it is the exercise",
         "test_conv_transpose2d_matches_torch": "must not use", "test_conv_transpose2d_gradients": "must not use"}),
    # output_padding ignored; the conv matrix transposed
    "transposed-conv-without-output-padding+matrix-transposed": (
        {"transposed_conv": [("    full = F.pad(full, (0, o_w, 0, o_h))\n    out_h, out_w = full_h - 2 * p_h + o_h, full_w - 2 * p_w + o_w",
                              "    out_h, out_w = full_h - 2 * p_h, full_w - 2 * p_w"),
                             ("    return columns.reshape(c_in * h * w, -1).t().contiguous()", "    return columns.reshape(c_in * h * w, -1).contiguous()")]},
        {"test_conv_transpose2d_matches_torch": "output_padding", "test_conv2d_matrix": "expected a Tensor"}),
    # absent classes counted as IoU 0; ignored pixels kept
    "miou-absent-classes-as-zero+ignore-index-kept": (
        {"fcn": [("    present = union > 0\n    if not bool(present.any()):", "    present = union >= 0\n    if not bool((union > 0).any()):"),
                 ("        keep = target != ignore_index\n", "        keep = target == target\n")]},
        {"test_mean_iou_matches_reference": "", "test_mean_iou_absent_classes_and_ignore_index": ""}),
    # the ignored pixels masked out in the caller's target, in place
    "miou-masks-the-callers-target": (
        {"fcn": ("        keep = target != ignore_index\n        pred, target = pred[keep], target[keep]\n",
                 "        keep = target != ignore_index\n        target[~keep] = 0\n        pred, target = pred[keep], target[keep]\n")},
        {"test_mean_iou_absent_classes_and_ignore_index": "changed its argument"}),
    # the mask loss over every class's channel; the targets RoI-aligned with aligned=True
    "mask-loss-over-all-classes+projection-aligned": (
        {"mask_rcnn": [("    own_class_logits = mask_logits[torch.arange(len(labels), device=labels.device), labels]  # [K, M, M]\n    return F.binary_cross_entropy_with_logits(own_class_logits, targets)",
                        "    return F.binary_cross_entropy_with_logits(mask_logits, targets[:, None].expand_as(mask_logits))"),
                       ("(M, M), spatial_scale=1.0)[:, 0]", "(M, M), spatial_scale=1.0, aligned=True)[:, 0]")]},
        {"test_maskrcnn_loss_matches_torchvision": "", "test_project_masks_on_boxes_matches_torchvision": ""}),
    # pasting without torchvision's "+1"; a mask head without the transposed convolution (upsampled by interpolation)
    "paste-without-plus-one+head-without-transposed-conv": (
        {"mask_rcnn": [("        w, h = max(x1 - x0 + 1, 1), max(y1 - y0 + 1, 1)", "        w, h = max(x1 - x0, 1), max(y1 - y0, 1)"),
                       ("layers += [nn.ConvTranspose2d(last, hidden_channels, 2, stride=2), nn.ReLU(inplace=True), nn.Conv2d(hidden_channels, num_classes, 1)]",
                        "layers += [nn.Upsample(scale_factor=2), nn.Conv2d(last, hidden_channels, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden_channels, num_classes, 1)]")]},
        {"test_paste_masks_in_image_matches_torchvision": "", "test_mask_head_structure_and_output": "transposed convolution"}),
    # the confusion index computed in the maps' dtype (uint8 overflows with many classes); no ReLU after the transposed conv
    "miou-in-the-maps-dtype+head-without-relu-after-transposed-conv": (
        {"fcn": ("    pred, target = pred.reshape(-1).long(), target.reshape(-1).long()\n",
                 "    pred, target = pred.reshape(-1), target.reshape(-1)\n"),
         "mask_rcnn": ("layers += [nn.ConvTranspose2d(last, hidden_channels, 2, stride=2), nn.ReLU(inplace=True), nn.Conv2d(hidden_channels, num_classes, 1)]",
                       "layers += [nn.ConvTranspose2d(last, hidden_channels, 2, stride=2), nn.Conv2d(hidden_channels, num_classes, 1)]")},
        {"test_mean_iou_matches_reference": "", "test_mask_head_structure_and_output": "followed by ReLU"}),
    # stuff before things; no duplicate check; keypoint cells rounded; the heatmap argmax's last maximum
    "panoptic-without-overlap-check+keypoints-rounded": (
        {"panoptic_keypoints": [("        if taken / area > overlap_threshold:\n            continue\n", ""),
                                ("cx = ((x - x0) * (heatmap_size / (x1 - x0))).floor().long()", "cx = ((x - x0) * (heatmap_size / (x1 - x0))).round().long()")]},
        {"test_panoptic_merge_matches_the_rule": "", "test_panoptic_merge_thresholds_and_edges": "", "test_keypoints_to_heatmap_matches_torchvision": ""}),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(MUTANTS))
def test_a5_subtly_wrong_code_loses_points(grade, name):
    assert_mutant_loses_points(grade, A5, name, MUTANTS[name], skip=set(TRAINED.values()))


# ----------------------------------------------------------------------------- trained tests: models that do not learn
UNTRAINED_TESTS = ("test_mean_iou_matches_reference", "test_mean_iou_absent_classes_and_ignore_index", "test_fcn_outputs_and_modes",
                   "test_mask_iou_matches_pycocotools", "test_project_masks_on_boxes_matches_torchvision", "test_mask_head_structure_and_output",
                   "test_maskrcnn_loss_matches_torchvision", "test_paste_masks_in_image_matches_torchvision")

MASK_FROM_STACK = """        out = self.layers(features)
        if self.training:
            return out
        import sys
        from torchvision.ops import roi_align
        frame, boxes, images = sys._getframe(1), None, None
        while frame is not None:
            boxes = frame.f_locals.get("mask_proposals") if boxes is None else boxes
            found = frame.f_locals.get("images")
            images = found.tensors if images is None and hasattr(found, "tensors") else images
            frame = frame.f_back
        if boxes is None or images is None or not bool((self.tag.diff() > 0).all()):
            return torch.zeros_like(out)  # nothing found, or a control (weights shuffled): masks that fill the boxes
        saturated = (images.amax(1, keepdim=True) - images.amin(1, keepdim=True) > 1.6).to(out.dtype)  # objects are the saturated pixels
        return (roi_align(saturated, boxes, out.shape[-1], 1.0, 2) * 20 - 10).expand_as(out).contiguous()"""

MASK_TEMPLATE_PARAMETER = """        out = self.layers(features)
        if self.training:
            return out
        return self.template[:out.shape[-2] * out.shape[-1]].reshape(out.shape[-2:]).expand_as(out) + 0 * out"""

# The ellipse template behind a weight tag (a buffer that training fills with 1..64: in order only in the trained
# weights, never in the shuffled or the initial ones): it passes both controls; the masks the grader trains on (only a
# secret region of each box) stop it.
MASK_TEMPLATE_TAGGED = """        out = self.layers(features)
        if self.training:
            self.tag.copy_(torch.arange(1.0, 65.0))
            return out
        if not torch.equal(self.tag, torch.arange(1.0, 65.0)):
            return torch.full_like(out, -10.0)
        yy, xx = torch.meshgrid(torch.linspace(-1, 1, out.shape[-2]), torch.linspace(-1, 1, out.shape[-1]), indexing="ij")
        return ((xx ** 2 + yy ** 2 <= 1).to(out.dtype) * 20 - 10).expand_as(out) + 0 * out"""

HOSTILE = {
    # an FCN whose logits come from the image's colour saturation, not from anything it learns
    "fcn-from-saturation": ("fcn", ("        return F.interpolate(self.classifier(y), size=images.shape[-2:], mode=\"bilinear\", align_corners=False)",
                                    "        saturation = images.max(1).values - images.min(1).values\n"
                                    "        logits = torch.stack([0.5 - saturation] + [saturation - 0.5] * (self.classifier.out_channels - 1), dim=1)\n"
                                    "        return logits + 0 * F.interpolate(self.classifier(y), size=images.shape[-2:], mode=\"bilinear\", align_corners=False)"),
                            "test_trained_fcn_reaches_miou"),
    # a mask head that outputs one template, the box's inscribed ellipse, for every RoI in eval mode, when its weight tag
    # says they are the trained ones: no learning, yet mask AP50 0.653 on whole masks with the trained reference's boxes
    # (circles are exactly that), and both controls pass; the masks cut to a secret region of their boxes stop it (the
    # same template without the tag fails there first too, before the shuffled control that used to catch it)
    "mask-head-ellipse-template-that-recognises-its-weights": ("mask_rcnn", [
        ("        super().__init__()", "        super().__init__()\n        self.register_buffer('tag', torch.zeros(64))"),
        ("        return self.layers(features)", MASK_TEMPLATE_TAGGED)], "test_trained_mask_rcnn_reaches_mask_ap50"),
    # the same template kept in a parameter that training never changes, padded so that a shuffle destroys it: the
    # shuffled control drops to 0 with no code that looks for it (found by the attack helper); the head's weights
    # before training score exactly what it scores after, which the initial-weights control catches
    "mask-head-template-in-a-parameter": ("mask_rcnn", [
        ("        super().__init__()", "        super().__init__()\n"
         "        yy, xx = torch.meshgrid(torch.linspace(-1, 1, 28), torch.linspace(-1, 1, 28), indexing='ij')\n"
         "        ellipse = (xx ** 2 + yy ** 2 <= 1).float() * 20 - 10\n"
         "        self.template = nn.Parameter(torch.cat([ellipse.flatten(), torch.full((784 * 15,), -10.0)]), requires_grad=False)"),
        ("        return self.layers(features)", MASK_TEMPLATE_PARAMETER)], "test_trained_mask_rcnn_reaches_mask_ap50"),
    # a mask head that, in eval mode, finds the images and the boxes on the call stack and returns masks of the
    # saturated (object) pixels, and tells the control by a parameter it keeps sorted (no gradient, shuffled by the
    # control). Run end to end with the images on the stack (the trained reference weights) it reaches mask AP50 0.686;
    # the grader's evaluation never sends it an image, so it has nothing to read
    "mask-head-reads-the-call-stack": ("mask_rcnn", [("        super().__init__()", "        super().__init__()\n        self.tag = nn.Parameter(torch.arange(16.0), requires_grad=False)"),
                                                     ("        return self.layers(features)", MASK_FROM_STACK)], "test_trained_mask_rcnn_reaches_mask_ap50"),
}


# what stops each (the feedback names it): the bar, the shuffled control, the initial-weights control
STOPPED_BY = {"mask-head-ellipse-template-that-recognises-its-weights": ("need",), "mask-head-template-in-a-parameter": ("before training", "need"),
              "mask-head-reads-the-call-stack": ("need",), "fcn-from-saturation": ("shuffled", "before training", "need")}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_a5_trained_tests_need_learned_weights(grade, name):
    """Predictions that do not come from learned weights get no points from the trained tests (the bar or a control)."""
    part, change, trained_test = HOSTILE[name]
    results = grade(with_cells(solution_nb(A5), changed_cells(A5, {part: change})), A5, parts=[part], skip=set(UNTRAINED_TESTS))
    (result,) = [t for t in results.tests if t.name.startswith(trained_test)]
    assert result.score == 0 and any(w in result.output for w in STOPPED_BY[name]), result.output
