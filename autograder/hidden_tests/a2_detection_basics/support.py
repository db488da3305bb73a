"""a2 grader support, run in the worker outside the student's namespace: the fixed training recipe.

Training happens here (it needs the student's model) on data the trusted process rendered and sent (its
classes renamed by a secret permutation); evaluation does not. The worker receives evaluation *images*
only and returns predictions, once per state dict the trusted process sent (the trained weights and the
controls, in a secret order); the hidden test made those images, knows their ground truth and computes
the metrics in the trusted process. Names used below are bound when this
module is loaded, before any student cell runs.
``state_copy`` and ``outputs_with_states`` come from worker_support/training.py (loaded before this module).
"""
import torch
import torch.nn.functional as F

IMAGE_SIZE = 64
SHAPES = dict(min_objects=1, max_objects=1, min_size=0.25, max_size=0.4)


def _training_batches(images, labels, boxes, batch_size: int):
    """The training data the trusted process sent (uint8 images, class ids, xyxy pixel boxes) as float batches
    with boxes in [0, 1]."""
    images, boxes = images.float() / 255, boxes.float() / IMAGE_SIZE
    return [(images[s:s + batch_size], labels[s:s + batch_size], boxes[s:s + batch_size]) for s in range(0, len(images), batch_size)]


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


def train_single_object(model_class, images, labels, boxes, steps=400, batch_size=32, seed=0):
    """Train ``model_class(3)`` with Adam (lr 1e-3) and the grader's multitask loss on the one-object 64x64 shapes
    the trusted process sent (``images`` Tensor[N, 3, 64, 64] uint8, ``labels`` Tensor[N], ``boxes`` Tensor[N, 4]
    xyxy pixels); returns (the model, its trained state dict, its state dict before training)."""
    torch.manual_seed(seed)
    batches = _training_batches(images, labels, boxes, batch_size)
    model = model_class(3)
    initial = state_copy(model)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for step in range(steps):
        images, labels, boxes = batches[step % len(batches)]
        logits, pred = model(images)
        loss = F.cross_entropy(logits, labels) + F.mse_loss(pred, boxes)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model, state_copy(model), initial


def predict_with_states(model, images, states):
    """[(class ids, boxes) of ``model`` on ``images`` with each of ``states``]: the trained weights and the controls'
    weights, in an order only the trusted process knows."""
    return outputs_with_states(lambda: _predict(model, images), model, states)
