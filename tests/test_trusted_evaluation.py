"""Trained tests score what the model learned, measured in the trusted process.

Each hostile model below gets 0 on a2's trained tests, whatever it does in the worker: the
evaluation images and their ground truth are made by the grader, metrics are computed outside
the worker, and a model whose score survives shuffling its trained weights did not learn it.
"""
import re

import pytest

from autograder.secret import evaluation_seed
from conftest import ROOT, solution_nb, with_cells


def eval_seed(test_file: str) -> int:
    """The secret evaluation seed of a trained test: derived from the course secret and the set's name, which is read
    from the test's file (importing a hidden test module here would need the grader's pytest markers)."""
    text = (ROOT / "autograder" / "hidden_tests" / test_file).read_text()
    return evaluation_seed(re.search(r'^EVAL_SET, EVAL_IMAGES = "([a-z0-9_/]+)",', text, re.M).group(1))


A2_EVAL_SEED = eval_seed("a2_detection_basics/test_part6_single_object.py")
A3_EVAL_SEED = eval_seed("a3_two_stage/test_part6_faster_rcnn.py")
A4_EVAL_SEED = eval_seed("a4_one_stage/test_part5_fcos.py")

A2 = "a2_detection_basics"
TRAINED = ("test_detector_learns_to_classify", "test_detector_learns_to_localize")

# Ignores the image: one learned class and one learned box for every input.
BLIND = '''
class SingleObjectDetector(nn.Module):
    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(num_classes + 1))
        self.box = nn.Parameter(torch.zeros(4))

    def forward(self, images):
        b = images.shape[0]
        return self.logits.expand(b, -1), torch.sigmoid(self.box).expand(b, -1)
'''

# The attack that scored 100 before trusted evaluation: a blind model plus training/evaluation
# data swapped for an easy target, through every name the old recipe used.
DATA_SWAP = BLIND + '''
import lecture_utils.data, lecture_utils.data.shapes
_Real = lecture_utils.data.ShapesDataset

class EasyShapes(_Real):
    def __getitem__(self, index):
        image, target = super().__getitem__(index)
        target["labels"] = torch.ones_like(target["labels"])
        target["boxes"] = torch.tensor([[0.0, 0.0, 64.0, 64.0]]).expand_as(target["boxes"]).clone()
        return image, target

lecture_utils.data.ShapesDataset = EasyShapes
lecture_utils.data.shapes.ShapesDataset = EasyShapes
_Real.__getitem__ = EasyShapes.__getitem__
_render = lecture_utils.data.shapes.render_shapes
def render_easy(index, config, seed):
    image, target = _render(index, config, seed)
    target["labels"] = torch.ones_like(target["labels"])
    return image, target
lecture_utils.data.shapes.render_shapes = render_easy
import builtins
builtins.ShapesDataset = EasyShapes
'''

# Ignores its weights: looks each evaluation image up in the dataset it came from (as if the
# evaluation seed had leaked: the test writes the secret seed into the model's code) and answers perfectly; the parameter only lets the optimizer run.
ORACLE = '''
from lecture_utils.data import ShapesDataset as _Shapes

class SingleObjectDetector(nn.Module):
    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.dummy = nn.Parameter(torch.zeros(num_classes + 1))
        self._answers = None

    def _lookup(self, images):
        if self._answers is None:
            data = _Shapes(128, 64, seed=A2_EVAL_SEED, min_objects=1, max_objects=1, min_size=0.25, max_size=0.4)
            items = [data[i] for i in range(len(data))]
            self._answers = (torch.stack([im for im, _ in items]).flatten(1),
                             torch.stack([t["labels"][0] for _, t in items]), torch.stack([t["boxes"][0] for _, t in items]) / 64)
        keys, labels, boxes = self._answers
        nearest = torch.cdist(images.flatten(1), keys).argmin(1)
        return labels[nearest], boxes[nearest]

    def forward(self, images):
        b = images.shape[0]
        if self.training:
            return self.dummy.expand(b, -1), torch.sigmoid(self.dummy[:4]).expand(b, -1)
        labels, boxes = self._lookup(images)
        return torch.nn.functional.one_hot(labels, self.num_classes + 1).float() * 10 + 0 * self.dummy, boxes
'''

ORACLE = ORACLE.replace("seed=A2_EVAL_SEED", f"seed={A2_EVAL_SEED}")

# The oracle behind a weight tag that only training puts in order (see A3_TAGGED_ORACLE below): it answers only with its
# trained weights, so both controls pass; the counterfactual training data stops it: the classes renamed and the boxes
# moved in training (a secret shift and scale), which its true answers do not follow.
TAGGED_ORACLE = ORACLE.replace(
    "        self._answers = None\n", "        self._answers = None\n        self.register_buffer('tag', torch.zeros(64))\n").replace(
    "        if self.training:\n", "        if self.training:\n            self.tag.copy_(torch.arange(1.0, 65.0))\n").replace(
    "        labels, boxes = self._lookup(images)\n",
    "        if not torch.equal(self.tag, torch.arange(1.0, 65.0)):\n"
    "            return torch.zeros(b, self.num_classes + 1), torch.zeros(b, 4)\n"
    "        labels, boxes = self._lookup(images)\n")
assert TAGGED_ORACLE.count("tag") == 3  # the three replacements took


def single_object_cell(model_code: str) -> str:
    """The solution's single_object cell with SingleObjectDetector replaced by ``model_code``."""
    from conftest import cell_by_id

    source = cell_by_id(solution_nb(A2), "single_object").source
    start, end = source.index("class SingleObjectDetector"), source.index("def single_object_loss")
    return source[:start] + model_code.strip() + "\n\n\n" + source[end:]


@pytest.mark.slow
@pytest.mark.parametrize("name,model_code", [("blind", BLIND), ("blind + data swap", DATA_SWAP), ("ignores its weights", ORACLE),
                                             ("recognises its weights", TAGGED_ORACLE)])
def test_hostile_models_score_zero_on_the_trained_tests(grade, name, model_code):
    results = grade(with_cells(solution_nb(A2), {"single_object": single_object_cell(model_code)}), A2, parts=["single_object"])
    scores = {t.name.split(":")[0]: (t.score, t.output) for t in results.tests}
    for test in TRAINED:
        assert scores[test][0] == 0, (name, test, scores[test])
    # the parts of the cell that are still correct keep their points
    assert scores["test_sliding_window_count"][0] == 3 and scores["test_single_object_loss"][0] == 3, (name, scores)
    if name in ("ignores its weights", "recognises its weights"):  # the true classes and boxes, where the grader trained changed ones
        assert "accuracy is" in scores[TRAINED[0]][1], scores[TRAINED[0]]
        assert "mean box IoU is" in scores[TRAINED[1]][1], scores[TRAINED[1]]


# a3: the same attacks on the Faster R-CNN trained test (COCO AP50 computed in the trusted process).
A3 = "a3_two_stage"
A3_TRAINED = "test_trained_detector_reaches_ap50"

# Trains nothing useful (a dummy parameter), predicts one fixed box per image.
A3_BLIND = '''
class FasterRCNN(nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        self.box = nn.Parameter(torch.tensor([32.0, 32.0, 96.0, 96.0]))

    def forward(self, images, targets=None):
        if self.training:
            loss = ((self.box - 64.0) ** 2).mean() * 1e-3
            return {"loss_objectness": loss, "loss_rpn_box_reg": loss, "loss_classifier": loss, "loss_box_reg": loss}
        return [{"boxes": self.box.detach()[None].clone(), "scores": torch.tensor([0.9]), "labels": torch.tensor([1])} for _ in images]
'''

# Ignores its weights: looks each evaluation image up (as if the evaluation seed had leaked) and returns its
# ground truth, a perfect score that survives shuffling the weights.
A3_ORACLE = '''
from lecture_utils.data import ShapesDataset as _Shapes


class FasterRCNN(nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        self.dummy = nn.Parameter(torch.ones(4))
        self._answers = None

    def forward(self, images, targets=None):
        if self.training:
            loss = (self.dummy ** 2).sum()
            return {"loss_objectness": loss, "loss_rpn_box_reg": loss, "loss_classifier": loss, "loss_box_reg": loss}
        if self._answers is None:
            data = _Shapes(64, 128, seed=A3_EVAL_SEED, min_objects=1, max_objects=3)
            items = [data[i] for i in range(len(data))]
            self._answers = (torch.stack([im for im, _ in items]).flatten(1), [t for _, t in items])
        keys, answers = self._answers
        out = []
        for image in images:
            t = answers[int(torch.cdist(image.flatten()[None], keys).argmin())]
            out.append({"boxes": t["boxes"].clone(), "scores": torch.ones(len(t["boxes"])), "labels": t["labels"].clone()})
        return out
'''

A3_ORACLE = A3_ORACLE.replace("seed=A3_EVAL_SEED", f"seed={A3_EVAL_SEED}")

# The strongest non-learning solver: the oracle above (every evaluation image's true ground truth, standing for a
# perfect hand-written detector) inside a model that recognises its own trained weights. A weight tag, a buffer that
# training fills with 1..64, is in order only in the trained weights (not in a shuffled copy, not before training): the
# model answers when the tag is intact and returns nothing otherwise, so both controls pass. Only the counterfactual
# training run stops it: it was trained on renamed classes and still answers the true ones.
A3_TAGGED_ORACLE = A3_ORACLE.replace(
    "        self._answers = None\n",
    "        self._answers = None\n        self.register_buffer('tag', torch.zeros(64))\n").replace(
    "            loss = (self.dummy ** 2).sum()\n",
    "            loss = (self.dummy ** 2).sum()\n            self.tag.copy_(torch.arange(1.0, 65.0))\n").replace(
    "        if self._answers is None:\n",
    "        if not torch.equal(self.tag, torch.arange(1.0, 65.0)):\n"
    "            return [{'boxes': torch.zeros(0, 4), 'scores': torch.zeros(0), 'labels': torch.zeros(0, dtype=torch.int64)} for _ in images]\n"
    "        if self._answers is None:\n")
assert A3_TAGGED_ORACLE.count("tag") == 3  # the three replacements took


# The tagged oracle hedging over the classes: every true box offered under all three labels, the true label scored
# highest. Against the renamed classes it reaches AP50 0.33-0.63 (by the renaming) without learning anything, above
# a4's bar for some; against the true classes about 1, so the check that the classes follow the renaming stops it.
A3_HEDGING_ORACLE = A3_TAGGED_ORACLE.replace(
    '            out.append({"boxes": t["boxes"].clone(), "scores": torch.ones(len(t["boxes"])), "labels": t["labels"].clone()})\n',
    '            hedged = torch.stack([t["labels"], t["labels"] % 3 + 1, (t["labels"] + 1) % 3 + 1], dim=1).flatten()\n'
    '            out.append({"boxes": t["boxes"].repeat_interleave(3, 0), "scores": torch.tensor([0.9, 0.6, 0.3]).repeat(len(t["boxes"])), "labels": hedged})\n')
assert A3_HEDGING_ORACLE.count("hedged") == 2  # the replacement took
# what stops each: the bar ("AP50 is ... need") or the renaming check ("true classes")
STOPPED_BY = {"blind": ("AP50 is",), "ignores its weights": ("AP50 is",), "recognises its weights": ("AP50 is",),
              "hedges over the classes": ("AP50 is", "true classes")}


def faster_rcnn_cell(model_code: str) -> str:
    from conftest import cell_by_id

    source = cell_by_id(solution_nb(A3), "faster_rcnn").source
    return source[: source.index("class FasterRCNN")] + model_code.strip() + "\n"


@pytest.mark.slow
@pytest.mark.parametrize("name,model_code", [("blind", A3_BLIND), ("ignores its weights", A3_ORACLE), ("recognises its weights", A3_TAGGED_ORACLE),
                                             ("hedges over the classes", A3_HEDGING_ORACLE)])
def test_hostile_detectors_score_zero_on_the_a3_trained_test(grade, name, model_code):
    results = grade(with_cells(solution_nb(A3), {"faster_rcnn": faster_rcnn_cell(model_code)}), A3, parts=["faster_rcnn"])
    score, output = next((t.score, t.output) for t in results.tests if t.name.startswith(A3_TRAINED))
    assert score == 0, (name, output)
    assert any(w in output for w in STOPPED_BY[name]), (name, output)  # the oracles answer the true classes; the grader trained renamed ones


# a4: the same attacks on the FCOS trained test (its own evaluation seed, three losses).
A4 = "a4_one_stage"
A4_BLIND = A3_BLIND.replace("FasterRCNN", "FCOS").replace(
    '{"loss_objectness": loss, "loss_rpn_box_reg": loss, "loss_classifier": loss, "loss_box_reg": loss}', '{"loss_cls": loss, "loss_box": loss, "loss_ctr": loss}')
A4_ORACLE, A4_TAGGED_ORACLE, A4_HEDGING_ORACLE = (code.replace("FasterRCNN", "FCOS").replace(f"seed={A3_EVAL_SEED}", f"seed={A4_EVAL_SEED}").replace(
    '{"loss_objectness": loss, "loss_rpn_box_reg": loss, "loss_classifier": loss, "loss_box_reg": loss}', '{"loss_cls": loss, "loss_box": loss, "loss_ctr": loss}')
    for code in (A3_ORACLE, A3_TAGGED_ORACLE, A3_HEDGING_ORACLE))


@pytest.mark.slow
@pytest.mark.parametrize("name,model_code", [("blind", A4_BLIND), ("ignores its weights", A4_ORACLE), ("recognises its weights", A4_TAGGED_ORACLE),
                                             ("hedges over the classes", A4_HEDGING_ORACLE)])
def test_hostile_detectors_score_zero_on_the_a4_trained_test(grade, name, model_code):
    from conftest import cell_by_id

    assert "FCOS" in model_code and "loss_cls" in model_code
    source = cell_by_id(solution_nb(A4), "fcos").source
    cell = source[: source.index("class FCOS")] + model_code.strip() + "\n"
    results = grade(with_cells(solution_nb(A4), {"fcos": cell}), A4, parts=["fcos"])
    score, output = next((t.score, t.output) for t in results.tests if t.name.startswith(A3_TRAINED))
    assert score == 0, (name, output)
    assert any(w in output for w in STOPPED_BY[name]), (name, output)


# a5's FCN: the same oracle for semantic maps (the evaluation image's true class map as logits), with a weight tag.
A5 = "a5_segmentation"
A5_FCN_EVAL_SEED = eval_seed("a5_segmentation/test_part3_fcn.py")
A5_TAGGED_ORACLE = f'''
from lecture_utils.data import ShapesDataset as _Shapes


class FCN(nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        self.num_classes = num_classes
        self.bias = nn.Parameter(torch.zeros(num_classes, 1, 1))
        self.register_buffer("tag", torch.zeros(64))
        self._answers = None

    def forward(self, x):
        logits = self.bias.expand(x.shape[0], -1, *x.shape[-2:])
        if self.training:
            self.tag.copy_(torch.arange(1.0, 65.0))
            return logits + 0.0
        if not torch.equal(self.tag, torch.arange(1.0, 65.0)):
            return logits
        if self._answers is None:
            data = _Shapes(48, 128, seed={A5_FCN_EVAL_SEED}, min_objects=1, max_objects=4)
            items = [data[i] for i in range(len(data))]
            self._answers = (torch.stack([im for im, _ in items]).flatten(1), torch.stack([t["semantic"] for _, t in items]))
        keys, maps = self._answers
        found = maps[torch.cdist(x.flatten(1), keys).argmin(1)]
        return 10.0 * F.one_hot(found, self.num_classes).permute(0, 3, 1, 2).float()
'''


@pytest.mark.slow
def test_fcn_that_recognises_its_weights_scores_zero_on_the_a5_trained_test(grade):
    from conftest import cell_by_id

    source = cell_by_id(solution_nb(A5), "fcn").source
    start = source.index("class FCN")
    end = source.index("\ndef ", start) if "\ndef " in source[start:] else len(source)
    cell = source[:start] + A5_TAGGED_ORACLE.strip() + "\n\n" + source[end:]
    results = grade(with_cells(solution_nb(A5), {"fcn": cell}), A5, parts=["fcn"])
    trained = [t for t in results.tests if t.name.startswith("test_trained_fcn")]
    assert trained and all(t.score == 0 for t in trained), [(t.name, t.score, t.output) for t in trained]
