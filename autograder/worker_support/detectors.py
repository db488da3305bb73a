"""The detectors' training recipe (a3, a4), worker side; uses ``state_copy``, ``outputs_with_states`` and
``train_one_cycle`` of ``training.py`` (loaded before it).

The worker trains the student's detector on the training data the trusted process rendered and sent (classes
secretly renamed) and returns detections on evaluation *images* it received; ground truth and metrics stay in
the trusted process."""
import torch


def losses_backward(model, images, targets):
    """Training-mode losses of a detector, and the names of the parameters the summed loss does not reach."""
    model.train()
    model.zero_grad(set_to_none=True)
    losses = model(images, targets)
    sum(losses.values()).backward()
    unreached = [name for name, p in model.named_parameters() if p.grad is None or not bool(p.grad.abs().sum() > 0)]
    return {k: v.detach() for k, v in losses.items()}, unreached


def _batches(images, targets, batch_size: int):
    """The training data the trusted process sent (uint8 images), as float batches of ``batch_size``."""
    images = images.float() / 255
    return [(list(images[s:s + batch_size]), list(targets[s:s + batch_size])) for s in range(0, len(images), batch_size)]


def _detect(model, images, batch_size: int = 16):
    model.eval()
    detections = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            out = model([im for im in images[start:start + batch_size]])
            detections.extend({k: torch.as_tensor(d[k]) for k in ("boxes", "scores", "labels")} for d in out)
    return detections


def train_detector(model_class, images, targets, steps, lr, batch_size=12, seed=0):
    """The trained tests' recipe: ``model_class(len(CLASSES))`` trained with AdamW (one-cycle learning rate up
    to ``lr``, weight decay 1e-4) on the training data the trusted process sent (``images`` Tensor[N, 3, H, W]
    uint8, ``targets`` [{boxes, labels}]), ``batch_size`` per step; returns (the model, its trained state dict,
    its state dict before training)."""
    from lecture_utils.data import CLASSES

    torch.manual_seed(seed)
    batches = _batches(images, targets, batch_size)
    model = model_class(len(CLASSES))
    initial = state_copy(model)
    train_one_cycle(model, batches, lambda m, batch: sum(m(*batch).values()), steps, lr)
    return model, state_copy(model), initial


def detect_with_states(model, images, states):
    """[detections of ``model`` on ``images`` (Tensor[N, 3, H, W], sent by the trusted process) with each of
    ``states``]: the trained weights and the controls' weights, in an order only the trusted process knows."""
    return outputs_with_states(lambda: _detect(model, images), model, states)
