"""The synthetic shapes dataset and the COCO / VOC formats."""
import numpy as np
import pytest
import torch
from torchvision.ops import masks_to_boxes

from lecture_utils.data import CLASSES, CocoDetection, ShapesDataset, VOCDetection, export_coco, export_voc


@pytest.fixture(scope="module")
def dataset():
    return ShapesDataset(24, (96, 144), seed=3, max_objects=5)


def test_deterministic_and_order_independent():
    a = ShapesDataset(10, 64, seed=1)
    later = a[7]
    first = a[0]
    again = ShapesDataset(10, 64, seed=1)
    assert torch.equal(again[7][0], later[0]) and torch.equal(again[0][1]["masks"], first[1]["masks"])
    assert not torch.equal(ShapesDataset(10, 64, seed=2)[0][0], first[0])
    with pytest.raises(IndexError):
        a[10]


def test_sample_structure(dataset):
    for image, t in dataset:
        n = len(t["labels"])
        assert image.shape == (3, 96, 144) and image.dtype == torch.float32 and 0 <= image.min() and image.max() <= 1
        assert t["boxes"].shape == (n, 4) and t["boxes"].dtype == torch.float32
        assert t["amodal_boxes"].shape == (n, 4)
        assert t["labels"].dtype == torch.int64 and set(t["labels"].tolist()) <= {1, 2, 3}
        assert t["masks"].shape == (n, 96, 144) and t["masks"].dtype == torch.uint8
        assert t["keypoints"].shape == (n, 4, 3)
        assert t["semantic"].shape == (96, 144) and t["semantic"].dtype == torch.int64
    counts = [len(t["labels"]) for _, t in dataset]
    assert min(counts) >= 1 and max(counts) <= 5 and len(set(counts)) > 1


def test_boxes_masks_semantic_and_keypoints_agree(dataset):
    for _, t in dataset:
        masks, amodal = t["masks"].bool(), t["amodal_masks"].bool()
        tight = masks_to_boxes(masks) + torch.tensor([0.0, 0.0, 1.0, 1.0])  # pixel indices -> pixel edges
        assert torch.equal(t["boxes"], tight)
        assert (masks <= amodal).all()  # visible part of the shape
        assert (masks.flatten(1).sum(1) >= 0.35 * amodal.flatten(1).sum(1) - 1).all()  # min_visible
        assert torch.equal(t["area"], masks.flatten(1).sum(1).float())
        assert (t["amodal_boxes"][:, :2] <= t["boxes"][:, :2] + 1).all() and (t["amodal_boxes"][:, 2:] >= t["boxes"][:, 2:] - 1).all()
        expected = torch.zeros_like(t["semantic"])
        for m, label in zip(masks, t["labels"]):
            expected[m] = label
        assert torch.equal(t["semantic"], expected)
        assert not (masks.sum(0) > 1).any(), "visible masks must not overlap"
        v = t["keypoints"][..., 2]
        assert set(v.unique().tolist()) <= {0.0, 1.0, 2.0}
        for label, vis in zip(t["labels"].tolist(), v):
            assert (vis[3] == 0) == (CLASSES[label] == "triangle")


def test_occlusion_happens_and_amodal_differs(dataset):
    hidden = [(t["amodal_masks"].sum() - t["masks"].sum()).item() for _, t in dataset]
    assert sum(h > 0 for h in hidden) >= 3
    assert any(((t["keypoints"][..., 2] == 1).any()) for _, t in dataset)


def test_coco_export_round_trip(dataset, tmp_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    subset = torch.utils.data.Subset(dataset, range(6))
    ann = export_coco(subset, tmp_path)
    coco = CocoDetection(tmp_path / "images", ann)
    assert len(coco) == 6
    for (image, t), (image2, t2) in zip(subset, coco):
        assert torch.equal(t["boxes"], t2["boxes"]) and torch.equal(t["labels"], t2["labels"]) and torch.equal(t["masks"], t2["masks"])
        assert (image - image2).abs().max() <= 1 / 255 + 1e-6
    gt = COCO(str(ann))
    dets = [dict(image_id=a["image_id"], category_id=a["category_id"], bbox=a["bbox"], score=1.0) for a in gt.dataset["annotations"]]
    ev = COCOeval(gt, gt.loadRes(dets), "bbox")
    ev.evaluate(), ev.accumulate()
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        ev.summarize()
    assert ev.stats[0] == pytest.approx(1.0)


def test_voc_export_round_trip(dataset, tmp_path):
    subset = torch.utils.data.Subset(dataset, range(5))
    export_voc(subset, tmp_path, classes=CLASSES)
    voc = VOCDetection(tmp_path, year="2012", image_set="train", classes=CLASSES)
    assert len(voc) == 5
    for (_, t), (image, t2) in zip(subset, voc):
        assert image.shape == (3, 96, 144)
        assert torch.equal(t["boxes"], t2["boxes"]) and torch.equal(t["labels"], t2["labels"])
        assert (t2["difficult"] == 0).all()


def test_works_in_a_dataloader_with_workers():
    ds = ShapesDataset(8, 64, seed=0)
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2, collate_fn=lambda b: tuple(zip(*b)))
    images, targets = next(iter(loader))
    assert torch.equal(images[1], ds[1][0]) and targets[2]["image_id"] == 2
