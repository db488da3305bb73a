"""a4 grader support, run in the worker outside the student's namespace.

``call_with_references``: the tests of part 4 (the FCOS losses) call the student's ``fcos_losses`` with
the part 1-2 functions it uses (``sigmoid_focal_loss``, ``fcos_get_deltas``, ``fcos_apply_deltas``,
``fcos_centerness``) bound to references built on torchvision (its focal loss and the
``BoxLinearCoder`` of its FCOS, with a stride-sized reference box per location), so a mistake in an
earlier part costs that part's points only. The trained test uses ``train_detector`` of
``autograder/worker_support/detectors.py``.
"""
import torch
from torchvision.models.detection._utils import BoxLinearCoder
from torchvision.ops import sigmoid_focal_loss as _tv_sigmoid_focal_loss

_CODER = BoxLinearCoder(normalize_by_size=True)


def _stride_boxes(locations, stride, like):
    """A box of side ``stride`` centred on each location: torchvision's FCOS coder normalizes by its size."""
    half = torch.as_tensor(stride, dtype=like.dtype, device=like.device).reshape(-1, 1) / 2
    return torch.cat([locations - half, locations + half], dim=1).to(like.dtype)


def _references() -> dict:
    def sigmoid_focal_loss(inputs, targets, alpha=0.25, gamma=2, reduction="none"):
        return _tv_sigmoid_focal_loss(inputs, targets, alpha, gamma, reduction)

    def fcos_get_deltas(locations, boxes, stride):
        return _CODER.encode(_stride_boxes(locations, stride, boxes), boxes)

    def fcos_apply_deltas(locations, deltas, stride):
        return _CODER.decode(deltas, _stride_boxes(locations, stride, deltas))

    def fcos_centerness(deltas):
        left_right, top_bottom = deltas[..., [0, 2]], deltas[..., [1, 3]]
        score = torch.sqrt(left_right.min(dim=-1).values / left_right.max(dim=-1).values
                           * top_bottom.min(dim=-1).values / top_bottom.max(dim=-1).values)
        return torch.where((deltas == -1).all(dim=-1), torch.full_like(score, -1.0), score)

    return {"sigmoid_focal_loss": sigmoid_focal_loss, "fcos_get_deltas": fcos_get_deltas,
            "fcos_apply_deltas": fcos_apply_deltas, "fcos_centerness": fcos_centerness}


def call_with_references(fn, args, kwargs):
    """``fn(*args, **kwargs)`` with the student's part 1-2 functions bound to the references (``call_with_bound`` of
    worker_support/bindings.py)."""
    return call_with_bound(_references(), fn, args, kwargs)  # noqa: F821 - loaded before this module


def losses_and_grads(fn, args, kwargs, weights):
    """``fn(*args, **kwargs)`` with the references bound (a dict of scalar losses), and the gradients of
    ``sum(weights[k] * losses[k])`` with respect to the first three arguments (the predictions)."""
    args = list(args)
    for i in range(3):
        args[i] = args[i].detach().clone().requires_grad_(True)
    losses = call_with_references(fn, args, kwargs)
    if not isinstance(losses, dict) or not all(isinstance(v, torch.Tensor) for v in losses.values()):
        return losses, None
    total = sum(weights[k] * v for k, v in losses.items() if k in weights)
    grads = torch.autograd.grad(total, args[:3], allow_unused=True) if isinstance(total, torch.Tensor) and total.requires_grad else (None,) * 3
    return {k: v.detach() for k, v in losses.items()}, [None if g is None else g.detach() for g in grads]


def head_dataflow(head, features, box_bias=None):
    """The layers of an FCOS head and what went through them on ``features`` (one level, so each layer runs once).

    Returns (layers, calls, outputs): layers {name: description} of its Conv2d, GroupNorm and other normalization
    modules; calls {name: (input, output)} recorded by forward hooks; the head's outputs. ``box_bias``: the bias of
    the 4-channel output convolution is set to this value first (to check that the deltas cannot overflow)."""
    layers, calls, handles = {}, {}, []
    for name, m in head.named_modules():
        if isinstance(m, torch.nn.Conv2d):
            layers[name] = ("Conv2d", m.in_channels, m.out_channels, tuple(m.kernel_size), tuple(m.padding), tuple(m.stride),
                            float(m.weight.detach().double().std()), None if m.bias is None else m.bias.detach().clone())
            if box_bias is not None and m.out_channels == 4 and m.bias is not None:
                with torch.no_grad():
                    m.bias.fill_(box_bias)
        elif isinstance(m, torch.nn.GroupNorm):
            layers[name] = ("GroupNorm", m.num_groups, m.num_channels, bool(m.affine))
        elif "norm" in type(m).__name__.lower():
            layers[name] = (type(m).__name__,)
        else:
            continue

        def record(module, inputs, output, name=name):
            calls[name] = (inputs[0].detach().clone(), output.detach().clone())
        handles.append(m.register_forward_hook(record))
    try:
        outputs = head(features)
    finally:
        for h in handles:
            h.remove()
    outputs = tuple(o.detach() for o in outputs) if isinstance(outputs, (tuple, list)) else outputs
    return layers, calls, outputs
