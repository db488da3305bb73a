"""a5 grader support, run in the worker outside the student's namespace: the two training recipes.

``train_segmenter`` trains the student's ``FCN`` with cross-entropy on rendered semantic maps; ``segment`` runs
it on the evaluation images the trusted process sent, once per state dict the trusted process sent (the
trained weights, and the controls: shuffled copies, the weights before training, in a secret order).
``train_mask_rcnn`` builds torchvision's Mask R-CNN (small backbone + FPN, torchvision's RPN and box head) whose
mask branch is the student's: their ``MaskHead`` as the mask head and their ``maskrcnn_loss`` as its loss
(torchvision's module-level function is swapped for the student's during the call and restored after), trains it
on the data the trusted process sent (its masks kept only inside a secret region of their boxes), and
returns the trained weights of the box part and the mask head. The trusted process runs the box part itself on
images the worker never sees and sends the mask head only the RoI features of its detections (``mask_logits``,
again once per state dict), so masks cannot come from the images by any other route; it pastes the masks and
computes mIoU and COCO mask AP50 from ground truth it made itself.
``state_copy``, ``outputs_with_states`` and ``train_one_cycle`` come from worker_support/training.py (loaded before this module).
"""
from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision.models.detection.roi_heads as _tv_roi_heads
import torchvision.models.detection.transform as _tv_transform
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign

# the recipe's model settings (the notebook's given cell builds the same model)
MASK_HEAD_ARGS = dict(hidden_channels=64, num_convs=2)
FPN_CHANNELS = 64


def _segment(model, images, batch_size=16):
    model.eval()
    with torch.no_grad():
        return torch.cat([model(images[s:s + batch_size]).argmax(1).to(torch.uint8) for s in range(0, len(images), batch_size)])


def train_segmenter(model_class, images, semantic, steps, lr, batch_size=8, seed=0):
    """``model_class(len(CLASSES))`` trained by the recipe (cross-entropy, AdamW with weight decay 1e-4, one-cycle
    learning rate up to ``lr``) on the training data the trusted process sent (``images`` Tensor[N, 3, H, W] uint8,
    ``semantic`` Tensor[N, H, W] class maps); returns (the model, its trained state dict, its state dict before training)."""
    from lecture_utils.data import CLASSES

    torch.manual_seed(seed)
    images, semantic = images.float() / 255, semantic.long()
    batches = [(images[s:s + batch_size], semantic[s:s + batch_size]) for s in range(0, len(images), batch_size)]
    model = model_class(len(CLASSES))
    initial = state_copy(model)
    train_one_cycle(model, batches, lambda m, batch: F.cross_entropy(m(batch[0]), batch[1]), steps, lr)
    return model, state_copy(model), initial


def segment(model, images, states):
    """[class maps Tensor[N, H, W] uint8 of ``model`` on ``images`` with each of ``states``]."""
    return outputs_with_states(lambda: _segment(model, images), model, states)


class _BackboneFPN(nn.Module):
    """The small CNN of Assignments 3-4 (strides 4, 8, 16) with torchvision's FPN: {"0", "1", "2"} maps of 64 channels."""

    out_channels = FPN_CHANNELS

    def __init__(self):
        super().__init__()

        def block(c_in, c_out, stride):
            return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))

        self.stage1 = nn.Sequential(block(3, 16, 2), block(16, 32, 2))
        self.stage2 = nn.Sequential(block(32, 64, 2), block(64, 64, 1))
        self.stage3 = nn.Sequential(block(64, 128, 2), block(128, 128, 1))
        self.fpn = FeaturePyramidNetwork([32, 64, 128], FPN_CHANNELS)

    def forward(self, x):
        c1 = self.stage1(x)
        c2 = self.stage2(c1)
        return self.fpn(OrderedDict([("0", c1), ("1", c2), ("2", self.stage3(c2))]))


def build_mask_rcnn(mask_head, num_classes=4):
    """torchvision's MaskRCNN on the small backbone, with ``mask_head`` (RoI features [K, 64, 14, 14] -> mask logits
    [K, num_classes, 28, 28]) as its whole mask branch."""
    levels = ["0", "1", "2"]
    return MaskRCNN(_BackboneFPN(), num_classes=None, min_size=128, max_size=128, image_mean=[0.5] * 3, image_std=[0.25] * 3,
                    rpn_anchor_generator=AnchorGenerator(((16,), (32,), (64,)), ((0.5, 1.0, 2.0),) * 3),
                    rpn_pre_nms_top_n_train=300, rpn_post_nms_top_n_train=150, rpn_pre_nms_top_n_test=300, rpn_post_nms_top_n_test=100,
                    box_roi_pool=MultiScaleRoIAlign(levels, 7, 1), box_head=TwoMLPHead(FPN_CHANNELS * 49, 256),
                    box_predictor=FastRCNNPredictor(256, num_classes), box_batch_size_per_image=32, box_positive_fraction=0.5, box_detections_per_img=10,
                    mask_roi_pool=MultiScaleRoIAlign(levels, 14, 1), mask_head=mask_head, mask_predictor=nn.Identity())


class _MaskFunctions:
    """torchvision's Mask R-CNN calling ``loss`` (a ``maskrcnn_loss``) and, if given, ``paste`` (a
    ``paste_masks_in_image``) inside the block; the grader's recipe swaps only the loss (it pastes in the trusted
    process), the segmentation bench both."""

    def __init__(self, loss, paste=None):
        self.loss, self.paste = loss, paste

    def __enter__(self):
        self.saved = _tv_roi_heads.maskrcnn_loss, _tv_transform.paste_masks_in_image
        _tv_roi_heads.maskrcnn_loss = self.loss
        if self.paste is not None:
            _tv_transform.paste_masks_in_image = self.paste
        return self

    def __exit__(self, *exc):
        _tv_roi_heads.maskrcnn_loss, _tv_transform.paste_masks_in_image = self.saved


def train_mask_rcnn(mask_head_class, maskrcnn_loss, images, targets, steps, lr, batch_size=8, seed=0):
    """Mask R-CNN with the student's mask branch trained end to end by the recipe (AdamW with weight decay 1e-4,
    one-cycle learning rate up to ``lr``) on the training data the trusted process sent (``images`` Tensor[N, 3, H, W]
    uint8, ``targets`` [{boxes, labels, masks Bool[K, H, W]}]); returns (the trained state dict of everything but the
    mask head, the trained mask head, its trained state dict, its state dict before training)."""
    from lecture_utils.data import CLASSES

    torch.manual_seed(seed)
    images = images.float() / 255
    targets = [{"boxes": t["boxes"], "labels": t["labels"], "masks": t["masks"].to(torch.uint8)} for t in targets]
    batches = [(list(images[s:s + batch_size]), targets[s:s + batch_size]) for s in range(0, len(images), batch_size)]
    head = mask_head_class(FPN_CHANNELS, len(CLASSES), **MASK_HEAD_ARGS)
    initial = state_copy(head)
    model = build_mask_rcnn(head, len(CLASSES))
    with _MaskFunctions(maskrcnn_loss):
        train_one_cycle(model, batches, lambda m, batch: sum(m(*batch).values()), steps, lr)
    box_part = {k: v.detach().clone() for k, v in model.state_dict().items() if not k.startswith("roi_heads.mask_head.")}
    return box_part, model.roi_heads.mask_head, state_copy(model.roi_heads.mask_head), initial


def mask_logits(mask_head, features, states, batch_size=128):
    """[mask logits Tensor[K, num_classes, 28, 28] of ``mask_head`` (eval mode, no gradients) on RoI features
    Tensor[K, 64, 14, 14] with each of ``states``]; K > 0."""

    def predict():
        mask_head.eval()
        with torch.no_grad():
            return torch.cat([mask_head(features[s:s + batch_size]) for s in range(0, len(features), batch_size)])

    return outputs_with_states(predict, mask_head, states)


def module_layers(module):
    """(kind, kernel_size, stride, out_channels) of every convolution of ``module``, in registration order."""
    layers = []
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            layers.append((type(m).__name__, tuple(m.kernel_size), tuple(m.stride), m.out_channels))
    return layers


def conv_weights(module):
    """(kind, weight, bias or None, padding) of every convolution of ``module``, in registration order."""
    return [(type(m).__name__, m.weight.detach().clone(), None if m.bias is None else m.bias.detach().clone(), tuple(m.padding))
            for m in module.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]


def unreached_parameters(module, features):
    """Names of ``module``'s parameters that get no (or a zero) gradient from the sum of its output."""
    module.zero_grad(set_to_none=True)
    module(features).sum().backward()
    return [name for name, p in module.named_parameters() if p.grad is None or not bool(p.grad.abs().sum() > 0)]
