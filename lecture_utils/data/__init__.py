"""Data for the course: the synthetic shapes dataset and readers for real formats (COCO, VOC)."""
from lecture_utils.data.formats import CocoDetection, VOCDetection, export_coco, export_voc
from lecture_utils.data.shapes import CLASSES, NUM_KEYPOINTS, ShapesConfig, ShapesDataset, render_shapes

__all__ = ["CLASSES", "NUM_KEYPOINTS", "ShapesConfig", "ShapesDataset", "render_shapes", "export_coco", "CocoDetection", "VOCDetection", "export_voc"]
