"""Random and edge-case box data shared by the a2 hidden tests."""
import torch


def random_boxes(n, generator, scale=100.0, min_size=1.0, integer=False, dtype=torch.float32):
    xy = torch.rand(n, 2, generator=generator, dtype=torch.float64) * scale
    wh = min_size + torch.rand(n, 2, generator=generator, dtype=torch.float64) * scale / 2
    boxes = torch.cat([xy, xy + wh], dim=1)
    if integer:
        boxes = boxes.round()
    return boxes.to(dtype)


def forbidden_nms_used(result):
    return result.ops.get("torchvision::nms", 0) > 0 or any(result.calls.values())


NMS_WATCH = ["torchvision.ops.nms", "torchvision.ops.batched_nms", "torchvision.ops.boxes.nms", "torchvision.ops.boxes.batched_nms"]
