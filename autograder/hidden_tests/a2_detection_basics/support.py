"""a2 grader support, run in the worker outside the student's namespace: the fixed training recipe.

Training happens here (it needs the student's model); evaluation does not. The worker receives
evaluation *images* only and returns predictions; the hidden test made those images, knows their
ground truth and computes the metrics in the trusted process. Names used below are bound when this
module is loaded, before any student cell runs.
"""
import torch
import torch.nn.functional as F
from lecture_utils.data import ShapesDataset

IMAGE_SIZE = 64
SHAPES = dict(min_objects=1, max_objects=1, min_size=0.25, max_size=0.4)


def _training_batches(batch_size: int, seed: int, n_images: int = 2048):
    data = ShapesDataset(n_images, IMAGE_SIZE, seed=seed, **SHAPES)
    batches = []
    for start in range(0, n_images, batch_size):
        items = [data[i] for i in range(start, min(start + batch_size, n_images))]
        images = torch.stack([im for im, _ in items])
        labels = torch.stack([t["labels"][0] for _, t in items])
        boxes = torch.stack([t["boxes"][0] for _, t in items]) / IMAGE_SIZE
        batches.append((images, labels, boxes))
    return batches


def _predict(model, images: torch.Tensor, batch_size: int = 64):
    """(class ids Tensor[N] int64, boxes Tensor[N, 4] xyxy pixels) of a model in eval mode."""
    model.eval()
    classes, boxes = [], []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            logits, pred = model(images[start:start + batch_size])
            classes.append(torch.as_tensor(logits).argmax(1))
            boxes.append(torch.as_tensor(pred, dtype=torch.float32) * IMAGE_SIZE)
    return torch.cat(classes).to(torch.int64), torch.cat(boxes)


def _shuffle_weights(model, seed: int) -> None:
    """Destroy what was learned but keep each parameter's values: permute its elements."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            flat = p.detach().reshape(-1)
            p.copy_(flat[torch.randperm(flat.numel(), generator=g)].reshape(p.shape))


def train_single_object(model_class, eval_images, steps=400, batch_size=32, seed=0):
    """Train ``model_class(3)`` with Adam (lr 1e-3) and the grader's multitask loss on one-object
    64x64 shapes; return predictions on ``eval_images`` of the trained model and of the same model
    with its weights shuffled: (classes, boxes, shuffled_classes, shuffled_boxes)."""
    torch.manual_seed(seed)
    batches = _training_batches(batch_size, seed + 100)
    model = model_class(3)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for step in range(steps):
        images, labels, boxes = batches[step % len(batches)]
        logits, pred = model(images)
        loss = F.cross_entropy(logits, labels) + F.mse_loss(pred, boxes)
        opt.zero_grad()
        loss.backward()
        opt.step()
    classes, pred_boxes = _predict(model, eval_images)
    _shuffle_weights(model, seed + 1)
    shuffled_classes, shuffled_boxes = _predict(model, eval_images)
    return classes, pred_boxes, shuffled_classes, shuffled_boxes
