"""Part 7: proposals_from_segments."""
import pytest
import torch
import torchvision.ops as tv

from .helpers import call, call_unchanged
from autograder.testing import describe, fail
from lecture_utils.data import ShapesDataset


def check_boxes(boxes, height, width, what):
    if not isinstance(boxes, torch.Tensor) or type(boxes) is not torch.Tensor or boxes.ndim != 2 or boxes.shape[1] != 4:
        fail(f"proposals_from_segments must return Tensor[K, 4], got {describe(boxes)} ({what})")
    if len(boxes) > 2000:
        fail(f"proposals_from_segments: {len(boxes)} proposals for one {height}x{width} image ({what}): return at most 2000")
    b = boxes.double()
    if len(b) and (bool((b[:, 2] < b[:, 0]).any()) or bool((b[:, 3] < b[:, 1]).any()) or float(b.min()) < -1
                   or float(b[:, 2].max()) > width + 1 or float(b[:, 3].max()) > height + 1):
        fail(f"proposals_from_segments: proposals must be xyxy boxes inside the image ({what})")
    return b


@pytest.mark.part("proposals")
@pytest.mark.points(2)
def test_proposals_recall_on_shapes(student):
    """recall at IoU 0.5 >= 0.8 on 12 non-square shapes images, at most 2000 boxes per image; the image is unchanged"""
    data = ShapesDataset(12, (96, 128), seed=11, max_objects=4)
    found = total = 0
    for index in range(len(data)):
        image, target = data[index]
        b = check_boxes(call(student, "proposals_from_segments", image, timeout=30), 96, 128, f"shapes image {index}")
        if len(b):
            found += int((tv.box_iou(target["boxes"].double(), b).max(1).values >= 0.5).sum())
        total += len(target["boxes"])
    if found < 0.8 * total:
        fail(f"proposals_from_segments: recall at IoU 0.5 is {found / total:.2f} ({found} of {total} objects), need 0.8")
    call_unchanged(student, "proposals_from_segments", data[0][0])


def stripes(widths, height, vertical, seed):
    """An image of flat-coloured stripes: every region of a hierarchical grouping of adjacent
    regions is a run of neighbouring columns (rows), and the runs form a binary tree."""
    g = torch.Generator().manual_seed(seed)
    colours = torch.rand(len(widths), 3, generator=g) * 0.8 + 0.1
    image = torch.cat([colours[i][:, None, None].expand(3, height, w) for i, w in enumerate(widths)], dim=2)
    return image if vertical else image.transpose(1, 2).contiguous()


def check_binary_merge_tree(boxes, height, width, vertical, what):
    """The boxes of a stripes image, seen as intervals along the stripes' axis, must be the regions of
    a complete pairwise merging: leaves that tile the image, each other interval the union of two
    adjacent intervals of the set, the whole image last, 2 * leaves - 1 intervals."""
    lo, hi, span_lo, span_hi, extent = (0, 2, 1, 3, width) if vertical else (1, 3, 0, 2, height)
    spans = {(round(float(b[span_lo])), round(float(b[span_hi]))) for b in boxes}
    if len(spans) != 1:
        fail(f"proposals_from_segments: on {what}, every region spans the whole {'height' if vertical else 'width'}, but the boxes have {len(spans)} different extents across the stripes")
    intervals = sorted({(round(float(b[lo])), round(float(b[hi]))) for b in boxes})
    end = max(h for _, h in intervals)
    inclusive = end == extent - 1  # boxes written with the last pixel's index as x2 (no +1) are accepted too
    if inclusive:
        intervals = sorted({(a, b + 1) for a, b in intervals})
    if (0, extent) not in intervals:
        fail(f"proposals_from_segments: on {what}, no proposal covers the whole image: merging adjacent regions must go on until one region is left")
    present = set(intervals)
    leaves = [iv for iv in intervals if not any(o != iv and iv[0] <= o[0] and o[1] <= iv[1] for o in intervals)]
    covered = sorted(leaves)
    if covered[0][0] != 0 or any(a[1] != b[0] for a, b in zip(covered, covered[1:])) or covered[-1][1] != extent:
        fail(f"proposals_from_segments: on {what}, the smallest regions do not tile the image (overlapping regions?)")
    for a, b in intervals:
        if (a, b) in leaves:
            continue
        if not any((a, c) in present and (c, b) in present for c in range(a + 1, b)):
            fail(f"proposals_from_segments: on {what}, the region covering {'columns' if vertical else 'rows'} {a}..{b - 1} is not the union of two adjacent "
                 "proposed regions: merge two adjacent regions at a time and propose every region that ever exists")
    if len(intervals) != 2 * len(leaves) - 1:
        fail(f"proposals_from_segments: on {what}, {len(leaves)} initial regions merged pairwise form {2 * len(leaves) - 1} regions, "
             f"but there are {len(intervals)} distinct proposals")


@pytest.mark.part("proposals")
@pytest.mark.points(3)
def test_proposals_merge_hierarchically(student):
    """on images of coloured stripes, the proposals are the regions of a pairwise merging of adjacent regions, down to the whole image"""
    for widths, height, vertical, seed in (([16, 24, 12, 20, 28], 40, True, 0), ([14, 18, 30, 22, 12, 16], 48, False, 1)):
        image = stripes(widths, height, vertical, seed)
        h, w = image.shape[1:]
        what = f"a {h}x{w} image of {len(widths)} {'vertical' if vertical else 'horizontal'} stripes"
        b = check_boxes(call(student, "proposals_from_segments", image, timeout=30), h, w, what)
        if not len(b):
            fail(f"proposals_from_segments: no proposals for {what}")
        check_binary_merge_tree(b, h, w, vertical, what)
