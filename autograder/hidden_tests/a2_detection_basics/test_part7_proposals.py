"""Part 7: proposals_from_segments (5 points)."""
import pytest
import torch
import torchvision.ops as tv

from autograder.testing import describe, fail
from lecture_utils.data import ShapesDataset


@pytest.mark.points(5)
def test_proposals_recall_on_shapes(student):
    """recall at IoU 0.5 >= 0.8 on 12 non-square shapes images, at most 2000 valid boxes per image"""
    data = ShapesDataset(12, (96, 128), seed=11, max_objects=4)
    found = total = 0
    for index in range(len(data)):
        image, target = data[index]
        boxes = student.call("proposals_from_segments", image, timeout=30).value
        if not isinstance(boxes, torch.Tensor) or boxes.ndim != 2 or boxes.shape[1] != 4:
            fail(f"proposals_from_segments must return Tensor[K, 4], got {describe(boxes)}")
        if len(boxes) > 2000:
            fail(f"{len(boxes)} proposals for one 96x128 image: keep it under 2000")
        b = boxes.float()
        if len(b) and (bool((b[:, 2] < b[:, 0]).any()) or bool((b[:, 3] < b[:, 1]).any()) or float(b.min()) < -1 or float(b[:, 2].max()) > 129 or float(b[:, 3].max()) > 97):
            fail("proposals must be xyxy boxes inside the image")
        if len(b):
            found += int((tv.box_iou(target["boxes"], b).max(1).values >= 0.5).sum())
        total += len(target["boxes"])
    if found < 0.8 * total:
        fail(f"recall at IoU 0.5 is {found / total:.2f} ({found} of {total} objects), need 0.8")
