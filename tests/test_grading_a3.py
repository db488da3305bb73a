"""End-to-end grading of a3_two_stage: subtly wrong code loses points, library calls that do the exercise get
nothing, correct alternatives keep full marks (a detector that does not learn: test_trusted_evaluation.py; solution
100, release 0, one part alone: test_grading_assignments.py)."""

import pytest

from conftest import assert_mutant_loses_points, part_points, replace_bodies, solution_nb, with_cells

A3 = "a3_two_stage"


# ----------------------------------------------------------------------------- other implementations
# roi_align gathering the four neighbours of every sample itself (no grid_sample), exact to float rounding
ROI_ALIGN_GATHER = '''    if input.element_size() < 4:  # half precision: sampled in float32 (the notebook's rule)
        return roi_align(input.to(torch.float32), _as_rois(boxes, input).to(torch.float32), output_size, spatial_scale, sampling_ratio,
                         aligned).to(input.dtype)
    rois = _as_rois(boxes, input)
    out_h, out_w = _pair(output_size)
    N, C, H, W = input.shape
    K = rois.shape[0]
    if K == 0:
        return input.new_zeros((0, C, out_h, out_w))
    batch = rois[:, 0].long()
    offset = 0.5 if aligned else 0.0
    x1, y1, x2, y2 = (rois[:, i] * spatial_scale - offset for i in range(1, 5))
    rw, rh = x2 - x1, y2 - y1
    if not aligned:
        rw, rh = rw.clamp(min=1.0), rh.clamp(min=1.0)
    bh, bw = rh / out_h, rw / out_w
    if sampling_ratio > 0:
        gh = torch.full((K,), sampling_ratio, dtype=torch.long, device=input.device)
        gw = gh
    else:
        gh, gw = torch.ceil(bh).long(), torch.ceil(bw).long()
    count = (gh * gw).clamp(min=1).to(input.dtype)
    Gh, Gw = max(int(gh.max()), 1), max(int(gw.max()), 1)

    def axis(start, size_of_bin, grid, n_bins, G, size):
        p = torch.arange(n_bins, device=input.device, dtype=input.dtype)[None, :, None]
        i = torch.arange(G, device=input.device)[None, None, :]
        t = start[:, None, None] + p * size_of_bin[:, None, None] + ((i + 0.5) * size_of_bin[:, None, None]) / grid.to(input.dtype)[:, None, None]
        ok = (i < grid[:, None, None]) & (t >= -1.0) & (t <= size)
        t = t.clamp(min=0.0)
        lo = t.floor().long().clamp(max=size - 1)
        hi = (lo + 1).clamp(max=size - 1)
        frac = torch.where(lo >= size - 1, torch.zeros_like(t), t - lo.to(t.dtype))
        return torch.stack([lo, hi], dim=-1), torch.stack([1.0 - frac, frac], dim=-1) * ok[..., None]

    ys, wy = axis(y1, bh, gh, out_h, Gh, H)
    xs, wx = axis(x1, bw, gw, out_w, Gw, W)
    idx = (batch[:, None] * H + ys.reshape(K, -1))[:, :, None] * W + xs.reshape(K, 1, -1)
    vals = input.permute(0, 2, 3, 1).reshape(N * H * W, C)[idx.reshape(-1)].reshape(K, out_h, Gh, 2, out_w, Gw, 2, C)
    return torch.einsum("kpgaqhbc,kpga,kqhb->kcpq", vals, wy, wx) / count[:, None, None, None]
'''

ROI_ALIGN_BODY_START = '''    rois = _as_rois(boxes, input)
    out_h, out_w = _pair(output_size)
    N, C, H, W = input.shape
    K = rois.shape[0]
    if K == 0:
        return input.new_zeros((0, C, out_h, out_w))
    image_of_roi = rois[:, 0].long()
    shift = 0.5 if aligned else 0.0'''


# match_anchors the way torchvision's Matcher is written (the matrix gt x anchors, nonzero pairs)
MATCH_LIKE_TORCHVISION = '''    if low_threshold > high_threshold:
        raise ValueError((low_threshold, high_threshold))
    if len(gt_boxes) == 0:
        return torch.full((len(anchors),), -1, dtype=torch.int64, device=anchors.device)
    m = box_iou(gt_boxes, anchors)
    if m.numel() == 0:
        return torch.zeros((0,), dtype=torch.int64, device=anchors.device)
    vals, idx = m.max(dim=0)
    original = idx.clone()
    idx[vals < low_threshold] = -1
    idx[(vals >= low_threshold) & (vals < high_threshold)] = -2
    if allow_low_quality_matches:
        best, _ = m.max(dim=1)
        pairs = torch.nonzero(m == best[:, None])
        idx[pairs[:, 1]] = original[pairs[:, 1]]
    return idx
'''

# sample_labels drawing random keys and keeping the smallest (another use of the generator)
SAMPLE_BY_RANDOM_KEYS = '''    if isinstance(generator, int):
        generator = torch.Generator().manual_seed(generator)
    pos_out, neg_out = [], []
    for lab in labels:
        quota = int(batch_size_per_image * positive_fraction)
        is_pos, is_neg = lab >= 1, lab == 0
        keys_pos = torch.rand(lab.shape, generator=generator).to(lab.device).masked_fill(~is_pos, 2.0)
        keys_neg = torch.rand(lab.shape, generator=generator).to(lab.device).masked_fill(~is_neg, 2.0)
        n_pos = min(int(is_pos.sum()), quota)
        n_neg = min(int(is_neg.sum()), batch_size_per_image - n_pos)
        pos = torch.zeros(lab.shape, dtype=torch.bool, device=lab.device)
        neg = torch.zeros(lab.shape, dtype=torch.bool, device=lab.device)
        pos[keys_pos.argsort()[:n_pos]] = True
        neg[keys_neg.argsort()[:n_neg]] = True
        pos_out.append(pos)
        neg_out.append(neg)
    return pos_out, neg_out
'''


def replaced(gid, *pairs):
    return replace_bodies(A3, gid, *pairs)


@pytest.mark.slow
def test_a3_correct_alternatives_keep_full_marks(grade):
    """roi_align with its own four-neighbour gather, a Matcher-shaped match_anchors, a sampler with random keys."""
    changes = {
        "roi_ops": replaced("roi_ops", ("def roi_align(", ROI_ALIGN_GATHER)),
        "anchors": replaced("anchors", ("def match_anchors(", MATCH_LIKE_TORCHVISION), ("def sample_labels(", SAMPLE_BY_RANDOM_KEYS)),
    }
    results = grade(with_cells(solution_nb(A3), changes), A3, parts=sorted(changes))
    assert results.score == sum(part_points(A3, p) for p in changes), [(t.name, t.output) for t in results.tests if t.status != "passed"]


FORBIDDEN = "must not use"
ROI_ALIGN_TESTS = ["test_roi_align_matches_torchvision", "test_roi_align_box_formats_and_empty", "test_roi_align_gradients"]

# Each mutant: {cell: change} and {test that must fail: text its feedback must contain (or "")}.
# Mutants of different functions of one cell are graded together (one grading each pair, to keep the time down).
# Box decoding written out without torchvision's clamp of dw, dh at log(1000 / 16): (solution line, replacement).
DECODE_WITHOUT_CLAMP = (
    "        boxes_all = coder.decode_single(box_regression.reshape(-1, 4), torch.cat(proposals).repeat_interleave(num_classes, dim=0))",
    "        _d = box_regression.reshape(-1, 4) / box_regression.new_tensor([10.0, 10.0, 5.0, 5.0])\n"
    "        _p = torch.cat(proposals).repeat_interleave(num_classes, dim=0)\n"
    "        _w, _h = _p[:, 2] - _p[:, 0], _p[:, 3] - _p[:, 1]\n"
    "        _cx, _cy = _p[:, 0] + 0.5 * _w + _d[:, 0] * _w, _p[:, 1] + 0.5 * _h + _d[:, 1] * _h\n"
    "        _pw, _ph = torch.exp(_d[:, 2]) * _w, torch.exp(_d[:, 3]) * _h\n"
    "        boxes_all = torch.stack([_cx - 0.5 * _pw, _cy - 0.5 * _ph, _cx + 0.5 * _pw, _cy + 0.5 * _ph], 1)")

MUTANTS = {
    # the caller's class logits shifted in place (the softmax is unchanged); box decoding without the dw/dh clamp
    "postprocess-changes-logits-in-place+decode-without-clamp": (
        {"roi_heads": [("    scores_all = F.softmax(class_logits, dim=-1)",
                        "    class_logits.sub_(class_logits.max(dim=-1, keepdim=True).values)\n    scores_all = F.softmax(class_logits, dim=-1)"),
                       DECODE_WITHOUT_CLAMP]},
        {"test_postprocess_detections_equal_torchvision": "in place"}),
    # gradients flow from the proposals into the RPN (torchvision decodes detached deltas)
    "rpn-proposals-not-detached": (
        {"rpn": ("self.box_coder.decode_single(deltas.detach().reshape(-1, 4)", "self.box_coder.decode_single(deltas.reshape(-1, 4)")},
        {"test_rpn_training_losses_equal_torchvision": "detached"}),
    # half-precision maps not handled (grid_sample wants one dtype)
    "roi_align-without-float16": (
        {"roi_ops": ("    if input.dtype in (torch.float16, torch.bfloat16):  # sampled in float32, returned in the input's dtype\n"
                     "        return roi_align(input.float(), _as_rois(boxes, input).float(), output_size, spatial_scale, sampling_ratio, aligned).to(input.dtype)\n", "")},
        {"test_roi_align_matches_torchvision": "float16"}),
    "decode-without-clamp": (
        {"roi_heads": DECODE_WITHOUT_CLAMP},
        {"test_postprocess_detections_equal_torchvision": "boxes"}),
    "roi_align-offset-before-scaling+roi_pool-rounds-halves-to-even": (
        {"roi_ops": [("x1, y1, x2, y2 = (rois[:, i] * spatial_scale - shift for i in range(1, 5))",
                      "x1, y1, x2, y2 = ((rois[:, i] - shift) * spatial_scale for i in range(1, 5))"),
                     ("x1, y1, x2, y2 = (c_round(rois[:, i] * spatial_scale) for i in range(1, 5))",
                      "x1, y1, x2, y2 = (torch.round(rois[:, i] * spatial_scale).long() for i in range(1, 5))")]},
        {"test_roi_align_matches_torchvision": "aligned=True", "test_roi_pool_matches_torchvision": ".5"}),
    "roi_align-sampling-ratio-2-when-adaptive+roi_pool-loops-over-rois": (
        {"roi_ops": [("        grid_h, grid_w = torch.ceil(bin_h).long(), torch.ceil(bin_w).long()",
                      "        grid_h = grid_w = torch.full((K,), 2, dtype=torch.long, device=input.device)"),
                     ("def roi_pool(input, boxes, output_size, spatial_scale=1.0):",
                      "def roi_pool(input, boxes, output_size, spatial_scale=1.0):\n    rois = _as_rois(boxes, input)\n"
                      "    outs = [_pool_all(input, rois[k:k + 1], output_size, spatial_scale) for k in range(len(rois))]\n"
                      "    return torch.cat(outs) if outs else _pool_all(input, rois, output_size, spatial_scale)\n\n\n"
                      "def _pool_all(input, boxes, output_size, spatial_scale=1.0):")]},
        {"test_roi_align_matches_torchvision": "sampling_ratio=0", "test_roi_ops_are_vectorized": "roi_pool ran"}),
    "roi_align-calls-torchvision": (
        {"roi_ops": (ROI_ALIGN_BODY_START, "    return torchvision.ops.roi_align(input, boxes, output_size, spatial_scale, sampling_ratio, aligned)\n" + ROI_ALIGN_BODY_START)},
        {t: "torchvision.ops" for t in ROI_ALIGN_TESTS}),
    "matcher-without-low-quality-matches+sampler-exceeds-the-positive-quota": (
        {"anchors": [("    if allow_low_quality_matches:\n", "    if False:\n"),
                     ("n_pos = min(positives.numel(), int(batch_size_per_image * positive_fraction))", "n_pos = positives.numel()")]},
        {"test_match_anchors_equals_torchvision_matcher": "allow_low_quality_matches=True", "test_match_anchors_thresholds_and_ties": "",
         "test_sample_labels_counts": "positives", "test_sample_labels_random_and_deterministic": ""}),
    # a low-quality anchor gets the gt it is best for, not its own best gt; and anchors without the half stride
    "matcher-rescues-the-gt-it-is-best-for+anchors-without-the-half-stride": (
        {"anchors": [("        matched = torch.where(kept_anyway, best_gt, matched)",
                      "        matched = torch.where(kept_anyway, (quality == top_for_each_gt).int().argmax(dim=0), matched)"),
                     ("cy = (torch.arange(int(fh), dtype=torch.float64, device=device) + 0.5) * step_h", "cy = torch.arange(int(fh), dtype=torch.float64, device=device) * step_h"),
                     ("cx = (torch.arange(int(fw), dtype=torch.float64, device=device) + 0.5) * step_w", "cx = torch.arange(int(fw), dtype=torch.float64, device=device) * step_w")]},
        {"test_match_anchors_thresholds_and_ties": "allow_low_quality_matches=True", "test_generate_anchors_formula_and_order": "",
         "test_generate_anchors_is_torchvision_shifted_by_half_a_stride": ""}),
    # FPN: bilinear top-down upsampling; upsampling by a factor 2 (wrong for maps that do not halve exactly)
    "fpn-bilinear-upsampling": (
        {"fpn": ('F.interpolate(merged, size=lateral.shape[-2:], mode="nearest")', 'F.interpolate(merged, size=lateral.shape[-2:], mode="bilinear")')},
        {"test_fpn_equals_torchvision": "level 0", "test_fpn_input_gradients": ""}),
    "fpn-scale-factor-2": (
        {"fpn": ('F.interpolate(merged, size=lateral.shape[-2:], mode="nearest")', 'F.interpolate(merged, scale_factor=2, mode="nearest")')},
        {"test_fpn_equals_torchvision": ""}),
    "fpn-wraps-torchvision": (
        {"fpn": ("        merged = self.lateral_convs[-1](features[-1])\n",
                 "        tv = torchvision.ops.FeaturePyramidNetwork([c.in_channels for c in self.lateral_convs], self.lateral_convs[0].out_channels)\n"
                 "        for i, (a, b) in enumerate(zip(self.lateral_convs, self.output_convs)):\n"
                 "            tv.inner_blocks[i][0].weight, tv.inner_blocks[i][0].bias = a.weight, a.bias\n"
                 "            tv.layer_blocks[i][0].weight, tv.layer_blocks[i][0].bias = b.weight, b.bias\n"
                 "        return list(tv({str(i): f for i, f in enumerate(features)}).values())\n"
                 "        merged = self.lateral_convs[-1](features[-1])\n")},
        {"test_fpn_equals_torchvision": FORBIDDEN}),
    # RPN: one NMS over all levels instead of one per level; the box loss divided by the positives, not all sampled
    "rpn-nms-across-levels+rpn-box-loss-over-positives": (
        {"rpn": [("proposals.append(b[batched_nms(b, s, lv, nms_thresh)[:post_nms_top_n]])",
                  "proposals.append(b[batched_nms(b, s, torch.zeros_like(lv), nms_thresh)[:post_nms_top_n]])"),
                 ('reduction="sum") / n_sampled', 'reduction="sum") / max(int(positive.sum()), 1)')]},
        {"test_rpn_proposals_equal_torchvision": "proposals of image", "test_rpn_losses_formulas": "loss_box"}),
    "rpn-wraps-torchvision-head": (
        {"rpn": ("        objectness, deltas = [], []\n        for feature in features:",
                 "        tv = torchvision.models.detection.rpn.RPNHead(self.conv.in_channels, self.cls_logits.out_channels)\n"
                 "        tv.conv[0][0].weight, tv.conv[0][0].bias = self.conv.weight, self.conv.bias\n"
                 "        tv.cls_logits, tv.bbox_pred = self.cls_logits, self.bbox_pred\n"
                 "        return tv(features)\n"
                 "        objectness, deltas = [], []\n        for feature in features:")},
        {"test_rpn_head_equals_torchvision": FORBIDDEN}),
    # second stage: the box loss on class 1's deltas for every row (not class-specific); targets encoded
    # without the coder weights (10, 10, 5, 5)
    "second-stage-not-class-specific+targets-not-scaled-by-the-coder-weights": (
        {"roi_heads": [("per_class[positive, labels[positive]]", "per_class[positive, 1]"),
                       ("    coder = BoxCoder(weights=(10.0, 10.0, 5.0, 5.0))\n    all_boxes", "    coder = BoxCoder(weights=(1.0, 1.0, 1.0, 1.0))\n    all_boxes")]},
        {"test_fastrcnn_loss_equals_torchvision": "loss_box_reg", "test_select_training_samples": "regression targets"}),
    # detections: every class decoded with class 1's deltas; training samples without the ground-truth boxes
    "postprocess-one-box-for-all-classes+no-gt-in-the-proposals": (
        {"roi_heads": [("coder.decode_single(box_regression.reshape(-1, 4),", "coder.decode_single(box_regression[:, 4:8].repeat(1, num_classes).reshape(-1, 4),"),
                       ("        boxes = torch.cat([boxes, gt_boxes])\n", "")]},
        {"test_postprocess_detections_equal_torchvision": "postprocess_detections case", "test_select_training_samples": "samples"}),
    # the sampler: generator=None with a fixed seed of its own; an int seed that reseeds torch's global generator; a
    # torch.Generator ignored; the caller's labels changed in place. The matcher without the threshold check.
    "sampler-none-is-a-fixed-seed+matcher-accepts-low-above-high": (
        {"anchors": [("    if isinstance(generator, int):\n        generator = torch.Generator().manual_seed(generator)\n",
                      "    if generator is None:\n        generator = torch.Generator().manual_seed(0)\n"
                      "    if isinstance(generator, int):\n        generator = torch.Generator().manual_seed(generator)\n"),
                     ('    if low_threshold > high_threshold:\n        raise ValueError("low_threshold must not exceed high_threshold")\n', "")]},
        {"test_sample_labels_generator_and_inputs": "generator=None", "test_match_anchors_without_objects": "ValueError"}),
    "sampler-int-seed-reseeds-the-global-generator": (
        {"anchors": ("    if isinstance(generator, int):\n        generator = torch.Generator().manual_seed(generator)\n",
                     "    if isinstance(generator, int):\n        torch.manual_seed(generator)\n        generator = None\n")},
        {"test_sample_labels_generator_and_inputs": "global generator"}),
    "sampler-ignores-a-generator-object": (
        {"anchors": ("    if isinstance(generator, int):\n        generator = torch.Generator().manual_seed(generator)\n",
                     "    if isinstance(generator, int):\n        generator = torch.Generator().manual_seed(generator)\n    else:\n        generator = None\n")},
        {"test_sample_labels_generator_and_inputs": "draw from that generator"}),
    "sampler-changes-the-labels": (
        {"anchors": ("    for per_image in labels:\n", "    for per_image in labels:\n        per_image.clamp_(max=1)\n")},
        {"test_sample_labels_generator_and_inputs": "in place"}),
    # proposals: a score equal to score_thresh dropped; a box exactly min_size wide dropped; zero losses cut from the graph
    "rpn-score-equal-to-thresh-dropped+zero-losses-not-connected": (
        {"rpn": [("keep = torch.where(s >= score_thresh)[0]", "keep = torch.where(s > score_thresh)[0]"),
                 ("zero = objectness.sum() * 0.0 + deltas.sum() * 0.0", "zero = objectness.new_zeros(())")]},
        {"test_filter_proposals_ties_equal_torchvision": "score_thresh", "test_rpn_losses_formulas": "backward()"}),
    "rpn-box-exactly-min-size-dropped": (
        {"rpn": ("keep = remove_small_boxes(b, min_size)", "keep = torch.where(((b[:, 2] - b[:, 0]) > min_size) & ((b[:, 3] - b[:, 1]) > min_size))[0]")},
        {"test_filter_proposals_ties_equal_torchvision": "min_size"}),
    # detections: a score equal to score_thresh kept; samples: the proposals list extended in place, the generator
    # not passed on; the box head initialized N(0, 0.01^2) instead of PyTorch's default
    "postprocess-score-equal-to-thresh-kept+select-extends-the-callers-proposals": (
        {"roi_heads": [("keep = torch.where(scores > score_thresh)[0]", "keep = torch.where(scores >= score_thresh)[0]"),
                       ("    for boxes, target in zip(proposals, targets):\n", "    for i, (boxes, target) in enumerate(zip(proposals, targets)):\n"),
                       ("        boxes = torch.cat([boxes, gt_boxes])\n", "        boxes = proposals[i] = torch.cat([boxes, gt_boxes])\n")]},
        {"test_postprocess_detections_equal_torchvision": "case 5", "test_select_training_samples": "changed its arguments"}),
    "select-drops-the-generator+box-head-small-normal-init": (
        {"roi_heads": [("sample_labels(all_labels, batch_size_per_image, positive_fraction, generator)", "sample_labels(all_labels, batch_size_per_image, positive_fraction)"),
                       ("        self.bbox_pred = nn.Linear(representation_size, 4 * num_classes)\n",
                        "        self.bbox_pred = nn.Linear(representation_size, 4 * num_classes)\n"
                        "        for m in (self.fc6, self.fc7, self.cls_score, self.bbox_pred):\n            nn.init.normal_(m.weight, std=0.01)\n")]},
        {"test_select_training_samples": "generator", "test_box_head_equals_torchvision": "default initialization"}),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(MUTANTS))
def test_a3_subtly_wrong_code_loses_points(grade, name):
    assert_mutant_loses_points(grade, A3, name, MUTANTS[name], each_part=False)

