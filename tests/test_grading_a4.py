"""End-to-end grading of a4_one_stage: subtly wrong code loses points, library calls that do the exercise get
nothing, and correct alternatives keep full marks (the trained test's hostile models are in test_trusted_evaluation.py;
solution 100, release 0, one part alone: test_grading_assignments.py)."""
import pytest

from conftest import assert_mutant_loses_points, part_points, replace_bodies, solution_nb, with_cells

A4 = "a4_one_stage"


# ----------------------------------------------------------------------------- other implementations
# focal loss from log-sigmoids, with 1 - p_t taken as the sigmoid of the other sign (no 1 - p)
FOCAL_FROM_LOGSIGMOID = '''    if reduction not in ("none", "mean", "sum"):
        raise ValueError(reduction)
    if alpha != -1 and not 0 <= alpha <= 1:
        raise ValueError(alpha)
    ce = -(targets * F.logsigmoid(inputs) + (1 - targets) * F.logsigmoid(-inputs))
    miss = targets * torch.sigmoid(-inputs) + (1 - targets) * torch.sigmoid(inputs)
    loss = ce * miss.pow(gamma)
    if alpha >= 0:
        loss = loss * (targets * alpha + (1 - targets) * (1 - alpha))
    return {"none": lambda t: t, "mean": torch.mean, "sum": torch.sum}[reduction](loss)
'''

# locations from one flat index per cell
LOCATIONS_FROM_FLAT_INDEX = '''    out = []
    for (h, w), s in zip(feature_sizes, strides):
        flat = torch.arange(int(h) * int(w), device=device)
        out.append(torch.stack([(flat % int(w)).double() + 0.5, (flat // int(w)).double() + 0.5], dim=1).mul(s).to(dtype))
    return out
'''

# boxes sorted by area (stable), the first box that fits in that order
ASSIGN_BY_SORTED_AREA = '''    gt_boxes, gt_labels = gt["boxes"], gt["labels"]
    points = torch.cat(list(locations))
    lo = torch.cat([torch.full((len(p),), float(r[0]), dtype=torch.float64, device=points.device) for p, r in zip(locations, size_ranges)])
    hi = torch.cat([torch.full((len(p),), float(r[1]), dtype=torch.float64, device=points.device) for p, r in zip(locations, size_ranges)])
    n = len(points)
    if gt_boxes.shape[0] == 0:
        return torch.zeros(n, dtype=torch.long, device=points.device), torch.zeros((n, 4), dtype=gt_boxes.dtype, device=points.device)
    order = torch.sort((gt_boxes[:, 2:] - gt_boxes[:, :2]).prod(dim=1), stable=True).indices
    b = gt_boxes[order]
    d = torch.cat([points[:, None, :] - b[None, :, :2], b[None, :, 2:] - points[:, None, :]], dim=2).double()
    big = d.amax(dim=2)
    ok = (d.amin(dim=2) > 0) & (big >= lo[:, None]) & (big <= hi[:, None])
    idx = order[ok.to(torch.uint8).argmax(dim=1)]
    return gt_labels[idx].long() * ok.any(dim=1), gt_boxes[idx]
'''

GET_DELTAS_CAT = '''    s = stride.reshape(-1, 1) if torch.is_tensor(stride) else stride
    return torch.cat([locations - boxes[:, :2], boxes[:, 2:] - locations], dim=1) / s
'''

APPLY_DELTAS_CAT = '''    s = stride.reshape(-1, 1) if torch.is_tensor(stride) else stride
    return torch.cat([locations - deltas[:, :2] * s, locations + deltas[:, 2:] * s], dim=1)
'''

# background found as "some delta <= 0"; the square root of the product of the two ratios
CENTERNESS_BY_SIGN = '''    l, t, r, b = deltas[..., 0], deltas[..., 1], deltas[..., 2], deltas[..., 3]
    c = ((l.minimum(r) * t.minimum(b)) / (l.maximum(r) * t.maximum(b))).sqrt()
    return c.masked_fill(deltas.amin(dim=-1) <= 0, -1.0)
'''

# the head: ReLU instead of exp for non-negative deltas, permute + reshape to flatten
HEAD_FORWARD_PERMUTE = '''        outs = ([], [], [])
        for feature in features:
            c, r = self.cls_tower(feature), self.reg_tower(feature)
            for out, value in zip(outs, (self.cls_logits(c), F.relu(self.bbox_reg(r)), self.centerness(r))):
                out.append(value.permute(0, 2, 3, 1).reshape(value.shape[0], -1, value.shape[1]))
        cls_logits, box_deltas, centerness = (torch.cat(o, dim=1) for o in outs)
        return cls_logits, box_deltas, centerness[..., 0]
'''

# the losses: boolean masks, F.one_hot with the background column cleared, GIoU written out by hand
LOSSES_BY_MASK = '''    mask = labels > 0
    num = mask.sum().clamp(min=1).to(cls_logits.dtype)
    one_hot = F.one_hot(labels, cls_logits.shape[-1]).to(cls_logits.dtype)
    one_hot[..., 0] = 0
    loss_cls = sigmoid_focal_loss(cls_logits, one_hot, focal_alpha, focal_gamma, "sum") / num
    pts = locations.expand(labels.shape[0], -1, -1)[mask]
    s = strides.expand(labels.shape[0], -1)[mask]
    gt = matched_boxes[mask]
    pred = fcos_apply_deltas(pts, box_deltas[mask], s)
    lt, rb = torch.max(pred[:, :2], gt[:, :2]), torch.min(pred[:, 2:], gt[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=1)
    area_p, area_g = (pred[:, 2:] - pred[:, :2]).prod(dim=1), (gt[:, 2:] - gt[:, :2]).prod(dim=1)
    union = area_p + area_g - inter
    hull = (torch.max(pred[:, 2:], gt[:, 2:]) - torch.min(pred[:, :2], gt[:, :2])).prod(dim=1)
    giou = inter / (union + 1e-7) - (hull - union) / (hull + 1e-7)
    loss_box = (1 - giou).sum() / num
    target = fcos_centerness(fcos_get_deltas(pts, gt, s))
    loss_ctr = F.binary_cross_entropy_with_logits(centerness_logits[mask], target, reduction="sum") / num
    return {"loss_cls": loss_cls, "loss_box": loss_box, "loss_ctr": loss_ctr}
'''


def replaced(gid, *pairs):
    return replace_bodies(A4, gid, *pairs)


@pytest.mark.slow
def test_a4_correct_alternatives_keep_full_marks(grade):
    """focal loss from log-sigmoids, locations from a flat index, assignment by stable area order, deltas with cat, centerness by sign,
    a head with ReLU deltas and permute/reshape, losses with masks and a hand-written GIoU (the trained part is left out: it trains)."""
    changes = {
        "focal_loss": replaced("focal_loss", ("def sigmoid_focal_loss(", FOCAL_FROM_LOGSIGMOID)),
        "fcos_targets": replaced("fcos_targets", ("def fcos_locations(", LOCATIONS_FROM_FLAT_INDEX), ("def fcos_assign_targets(", ASSIGN_BY_SORTED_AREA),
                                 ("def fcos_get_deltas(", GET_DELTAS_CAT), ("def fcos_apply_deltas(", APPLY_DELTAS_CAT),
                                 ("def fcos_centerness(", CENTERNESS_BY_SIGN)),
        "fcos_head": replaced("fcos_head", ("    def forward(self, features):", HEAD_FORWARD_PERMUTE)),
        "fcos_losses": replaced("fcos_losses", ("def fcos_losses(", LOSSES_BY_MASK)),
    }
    results = grade(with_cells(solution_nb(A4), changes), A4, parts=sorted(changes))
    assert results.score == sum(part_points(A4, p) for p in changes), [(t.name, t.output) for t in results.tests if t.status != "passed"]


FOCAL_TESTS = ["test_focal_loss_matches_torchvision", "test_focal_loss_alpha_off_and_gamma_zero", "test_focal_loss_extreme_logits",
               "test_focal_loss_gradients", "test_focal_loss_leaves_inputs_unchanged"]
FOCAL_BODY_START = '''    if reduction not in ("none", "mean", "sum"):'''

# Each mutant: {cell: change} and {test that must fail: text its feedback must contain (or "")}.
# A focal-loss mutant and an FCOS mutant are graded together (one grading each pair, to keep the time down).
MUTANTS = {
    # an unknown reduction treated as "none"; BatchNorm in the towers; the prior bias on all three output convolutions
    "focal-unknown-reduction-as-none+head-batchnorm-and-prior-everywhere": (
        {"focal_loss": ('        raise ValueError(f"reduction must be \'none\', \'mean\' or \'sum\', not {reduction!r}")',
                        '        reduction = "none"'),
         "fcos_head": [("nn.GroupNorm(16, in_channels)", "nn.BatchNorm2d(in_channels)"),
                       ("        nn.init.constant_(self.cls_logits.bias, -math.log((1 - prior_probability) / prior_probability))",
                        "        for layer in (self.cls_logits, self.bbox_reg, self.centerness):\n"
                        "            nn.init.constant_(layer.bias, -math.log((1 - prior_probability) / prior_probability))")]},
        {"test_focal_loss_alpha_off_and_gamma_zero": "must raise ValueError", "test_fcos_head_shared_weights_prior_and_deltas": "class logits only"}),
    "head-batchnorm": (
        {"fcos_head": ("nn.GroupNorm(16, in_channels)", "nn.BatchNorm2d(in_channels)")},
        {"test_fcos_head_shared_weights_prior_and_deltas": "GroupNorm"}),
    # every location takes part on every level; alpha weighs positives and negatives alike
    "assign-without-size-ranges+focal-alpha-for-both-classes": (
        {"fcos_targets": ("(sides.min(dim=-1).values > 0) & (reach >= bounds[:, 0:1]) & (reach <= bounds[:, 1:2])", "(sides.min(dim=-1).values > 0)"),
         "focal_loss": ("focal = (alpha * targets + (1 - alpha) * (1 - targets)) * focal", "focal = alpha * focal")},
        {"test_fcos_assign_targets_random": "labels", "test_fcos_assign_targets_edges_and_ties": "", "test_focal_loss_matches_torchvision": "alpha=0.25",
         "test_focal_loss_alpha_off_and_gamma_zero": "alpha_t", "test_focal_loss_gradients": ""}),
    # ties to the largest box; the modulating factor on p_t instead of 1 - p_t
    "ties-to-the-largest-area+focal-gamma-on-the-wrong-term": (
        {"fcos_targets": ('cost = torch.where(fits, areas[None, :], torch.full_like(reach, float("inf")))\n    chosen = cost.min(dim=1).indices',
                          'cost = torch.where(fits, areas[None, :], torch.full_like(reach, -float("inf")))\n    chosen = cost.max(dim=1).indices'),
         "focal_loss": ("focal = bce * (1 - prob_of_truth) ** gamma", "focal = bce * prob_of_truth ** gamma")},
        {"test_fcos_assign_targets_edges_and_ties": "smallest area", "test_fcos_assign_targets_random": "", "test_focal_loss_matches_torchvision": "",
         "test_focal_loss_alpha_off_and_gamma_zero": "alpha -1", "test_focal_loss_gradients": ""}),
    # deltas in pixels (not divided by the stride); centerness computed on background rows alike; log(sigmoid) overflows
    "deltas-not-divided-by-the-stride+centerness-without-background+focal-log-of-sigmoid": (
        {"fcos_targets": [("return ltrb / _stride_column(stride, ltrb)", "return ltrb"),
                          ("return torch.where(is_background, torch.full_like(score, -1.0), score)", "return score")],
         "focal_loss": ('bce = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")',
                        "bce = -(targets * torch.log(prob) + (1 - targets) * torch.log(1 - prob))")},
        {"test_fcos_deltas_round_trip": "fcos_get_deltas", "test_fcos_centerness": "with background rows", "test_focal_loss_extreme_logits": "not finite"}),
    # torchvision's focal loss wrapped; the assignment done one location at a time
    "focal-calls-torchvision+assign-loops-over-locations": (
        {"focal_loss": (FOCAL_BODY_START, "    return torchvision.ops.sigmoid_focal_loss(inputs, targets, alpha, gamma, reduction)\n" + FOCAL_BODY_START),
         "fcos_targets": ("def fcos_assign_targets(locations, gt, size_ranges):",
                          "def fcos_assign_targets(locations, gt, size_ranges):\n"
                          "    pieces = [_assign_all([p[i:i + 1]], gt, [r]) for p, r in zip(locations, size_ranges) for i in range(len(p))]\n"
                          "    if not pieces:\n        return _assign_all(locations, gt, size_ranges)\n"
                          "    return torch.cat([a for a, _ in pieces]), torch.cat([b for _, b in pieces])\n\n\n"
                          "def _assign_all(locations, gt, size_ranges):")},
        {**{t: "torchvision.ops" for t in FOCAL_TESTS}, "test_fcos_functions_are_vectorized": "fcos_assign_targets ran"}),
    # the losses divided by the number of locations; the head flattened column by column and without the prior
    "losses-over-all-locations+head-columns-first-without-prior": (
        {"fcos_losses": ("n_positive = max(1, int(positive.sum()))", "n_positive = labels.numel()"),
         "fcos_head": [("return x.flatten(2).transpose(1, 2)", "return x.transpose(2, 3).flatten(2).transpose(1, 2)"),
                       ("        nn.init.constant_(self.cls_logits.bias, -math.log((1 - prior_probability) / prior_probability))\n", "")]},
        {"test_fcos_losses_equal_torchvision": "loss_cls", "test_fcos_losses_gradients": "", "test_fcos_head_order_is_levels_then_rows": "row by row",
         "test_fcos_head_shared_weights_prior_and_deltas": "prior"}),
    # centerness learned on every location; the box loss normalized per image (a mean of per-image means)
    "centerness-on-all-locations": (
        {"fcos_losses": ("loss_ctr = F.binary_cross_entropy_with_logits(centerness_logits[image_of, location_of], target_centerness, reduction=\"sum\")",
                         "everywhere = fcos_centerness(fcos_get_deltas(locations.repeat(len(labels), 1), matched_boxes.reshape(-1, 4), strides.repeat(len(labels))))\n"
                         "    everywhere = everywhere.nan_to_num(0).clamp(0, 1)\n"
                         "    loss_ctr = F.binary_cross_entropy_with_logits(centerness_logits.reshape(-1), everywhere, reduction=\"sum\")")},
        {"test_fcos_losses_equal_torchvision": "loss_ctr", "test_fcos_losses_gradients": ""}),
    # torchvision's FCOSHead inside the student's
    "head-wraps-torchvision": (
        {"fcos_head": [("        self.cls_tower, self.reg_tower = tower(), tower()",
                       "        self.cls_tower, self.reg_tower = tower(), tower()\n"
                       "        self.tv = torchvision.models.detection.fcos.FCOSHead(in_channels, 1, num_classes, num_convs)"),
                      ("        cls_logits, box_deltas, centerness = [], [], []\n",
                       "        out = self.tv(features)\n        return out[\"cls_logits\"], out[\"bbox_regression\"], out[\"bbox_ctrness\"][..., 0]\n")]},
        {"test_fcos_head_shapes": "torchvision"}),
    # no validation of alpha (torchvision raises for a value outside [0, 1] other than -1); towers without their ReLU
    "focal-alpha-not-validated+head-towers-without-relu": (
        {"focal_loss": ('    if not (0 <= alpha <= 1 or alpha == -1):\n        raise ValueError(f"alpha must be in [0, 1], or -1 to switch the weighting off, not {alpha}")\n', ""),
         "fcos_head": (", nn.ReLU()]", "]")},
        {"test_focal_loss_alpha_off_and_gamma_zero": "alpha=-0.5", "test_fcos_head_architecture_and_initialization": "ReLU(GroupNorm"}),
    # the head's architecture as the notebook writes it: the norm, the number of blocks, two towers, where centerness goes,
    # 3x3 outputs, N(0, 0.01^2) output weights, the prior from prior_probability, exp that cannot overflow
    "head-without-norm": ({"fcos_head": ("nn.GroupNorm(16, in_channels), ", "")}, {"test_fcos_head_architecture_and_initialization": "GroupNorm"}),
    "head-instance-norm": ({"fcos_head": ("nn.GroupNorm(16, in_channels)", "nn.GroupNorm(in_channels, in_channels)")},
                           {"test_fcos_head_architecture_and_initialization": "GroupNorm(16"}),
    "head-two-blocks-whatever-num_convs": ({"fcos_head": ("for _ in range(num_convs):", "for _ in range(2):")},
                                           {"test_fcos_head_architecture_and_initialization": "num_convs=1"}),
    "head-one-tower-for-both": ({"fcos_head": ("self.cls_tower, self.reg_tower = tower(), tower()", "self.cls_tower = self.reg_tower = tower()")},
                                {"test_fcos_head_architecture_and_initialization": ""}),
    "head-centerness-on-the-classification-tower": ({"fcos_head": ("rows(self.centerness(reg_feature))", "rows(self.centerness(cls_feature))")},
                                                    {"test_fcos_head_architecture_and_initialization": "same regression tower"}),
    "head-1x1-output-convolutions": ({"fcos_head": [(f"nn.Conv2d(in_channels, {n}, 3, padding=1)", f"nn.Conv2d(in_channels, {n}, 1)") for n in ("num_classes", "4", "1")]},
                                     {"test_fcos_head_architecture_and_initialization": "3x3"}),
    "head-output-weights-default-init": ({"fcos_head": ("            nn.init.normal_(layer.weight, std=0.01)\n", "")},
                                         {"test_fcos_head_architecture_and_initialization": "N(0, 0.01^2)"}),
    "head-prior-ignores-prior_probability": ({"fcos_head": ("-math.log((1 - prior_probability) / prior_probability)", "-math.log(99)")},
                                             {"test_fcos_head_architecture_and_initialization": "prior_probability=0.05"}),
    # the gt dict emptied (pop) by the assignment: no tensor changed, the caller's dict did
    "assign-pops-the-gt-dict": ({"fcos_targets": ('gt_boxes, gt_labels = gt["boxes"], gt["labels"]', 'gt_boxes, gt_labels = gt.pop("boxes"), gt.pop("labels")')},
                                {"test_fcos_functions_leave_inputs_unchanged": "gt dict"}),
    "head-exp-without-clamp": ({"fcos_head": ("torch.exp(self.bbox_reg(reg_feature).clamp(max=10.0))", "torch.exp(self.bbox_reg(reg_feature))")},
                               {"test_fcos_head_architecture_and_initialization": "not finite"}),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(MUTANTS))
def test_a4_subtly_wrong_code_loses_points(grade, name):
    assert_mutant_loses_points(grade, A4, name, MUTANTS[name])

