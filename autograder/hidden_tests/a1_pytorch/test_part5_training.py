"""Part 5: train_model and detection_collate."""
import pytest
import torch

from autograder.testing import assert_float_list, assert_state_dict, assert_tensor, call_checked, describe, fail

from .lesson import FIT, FIT_HINT

SMALL = [("Linear", (3, 4)), ("Tanh", ()), ("Linear", (4, 2))]
# BatchNorm and Dropout behave differently in train and eval mode.
WITH_MODES = [("Linear", (3, 6)), ("BatchNorm1d", (6,)), ("ReLU", ()), ("Dropout", (0.3,)), ("Linear", (6, 2))]


def setup_local(reference_seed, n, layers, d_in=3, d_out=2):
    g = torch.Generator().manual_seed(reference_seed)
    torch.manual_seed(reference_seed)
    model = torch.nn.Sequential(*[getattr(torch.nn, name)(*args) for name, args in layers]).double()
    x, y = torch.randn(n, d_in, generator=g, dtype=torch.float64), torch.randn(n, d_out, generator=g, dtype=torch.float64)
    return model, x, y


def run_both(student, reference, *, n, batch_size, optimizer, opt_kwargs, loss, epochs, seed, layers=SMALL, start_in_eval=False):
    """The student's train_model in the worker and the reference loop here, from the same weights,
    batches and random state (dropout masks); losses, weights and buffers must agree."""
    local, x, y = setup_local(seed, n, layers)
    lib = student.lib
    remote = lib("torch.nn.Sequential")(*[lib(f"torch.nn.{name}")(*args) for name, args in layers])
    remote.double()
    remote.load_state_dict({k: v.clone() for k, v in local.state_dict().items()})
    if start_in_eval:
        remote.eval()
        local.eval()
    # The loaders get their own generator so that iterating them does not draw from the global RNG.
    remote_loader = lib("torch.utils.data.DataLoader")(lib("torch.utils.data.TensorDataset")(x, y), batch_size=batch_size, shuffle=False,
                                                       generator=lib("torch.Generator")())
    remote_opt = lib(f"torch.optim.{optimizer}")(remote.parameters(), **opt_kwargs)
    lib("torch.manual_seed")(seed + 100)
    result = call_checked(student, "train_model", remote, remote_loader, remote_opt, lib(f"torch.nn.{loss}")(), epochs, forbid=FIT, hint=FIT_HINT)

    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=batch_size, shuffle=False, generator=torch.Generator())
    opt = getattr(torch.optim, optimizer)(local.parameters(), **opt_kwargs)
    torch.manual_seed(seed + 100)
    expected = reference.train_model(local, loader, opt, getattr(torch.nn, loss)(), epochs)
    what = f"train_model({n} samples, batch {batch_size}, {optimizer}, {loss}, {epochs} epochs)"
    if layers is WITH_MODES:
        what += (" on a model with BatchNorm and Dropout" + (" handed over in eval mode" if start_in_eval else "")
                 + " (train_model must train it in train mode: model.train())")
    assert_float_list(result.value, expected, f"{what}: per-epoch mean batch losses", rtol=1e-7, atol=1e-9)
    assert_state_dict(remote.state_dict(), local.state_dict(), f"{what}: trained weights and buffers", rtol=1e-7, atol=1e-9)


@pytest.mark.part("training")
@pytest.mark.points(2)
def test_train_model_sgd_momentum(student, reference):
    """losses and trained weights equal the reference loop (SGD with momentum, 3 batches per epoch)"""
    run_both(student, reference, n=12, batch_size=4, optimizer="SGD", opt_kwargs=dict(lr=0.05, momentum=0.9), loss="MSELoss", epochs=3, seed=0)


@pytest.mark.part("training")
@pytest.mark.points(2)
def test_train_model_uneven_batches(student, reference):
    """every batch counts once in the epoch mean, also a short last batch (Adam, L1 loss)"""
    run_both(student, reference, n=10, batch_size=3, optimizer="Adam", opt_kwargs=dict(lr=0.01), loss="L1Loss", epochs=2, seed=1)


@pytest.mark.part("training")
@pytest.mark.points(2)
def test_train_model_edge_cases(student, reference):
    """zero epochs returns [] and leaves the model unchanged; a single full batch"""
    run_both(student, reference, n=5, batch_size=5, optimizer="SGD", opt_kwargs=dict(lr=0.1), loss="MSELoss", epochs=0, seed=2)
    run_both(student, reference, n=5, batch_size=8, optimizer="SGD", opt_kwargs=dict(lr=0.1), loss="MSELoss", epochs=4, seed=3)


@pytest.mark.part("training")
@pytest.mark.points(2)
def test_train_model_trains_in_train_mode(student, reference):
    """the model trains in train mode (BatchNorm batch statistics, Dropout active), also when handed over in eval mode"""
    for start_in_eval in (True, False):
        run_both(student, reference, n=12, batch_size=4, optimizer="SGD", opt_kwargs=dict(lr=0.05, momentum=0.9), loss="MSELoss",
                 epochs=2, seed=4, layers=WITH_MODES, start_in_eval=start_in_eval)


def detection_batch(seed, counts, size=(3, 20, 28), uint8=False):
    g = torch.Generator().manual_seed(seed)
    batch = []
    for i, k in enumerate(counts):
        xy = torch.rand(k, 2, generator=g) * 10
        boxes = torch.cat([xy, xy + 1 + torch.rand(k, 2, generator=g) * 8], dim=1)
        labels = torch.randint(1, 4, (k,), generator=g)
        image = torch.randint(0, 256, size, generator=g, dtype=torch.uint8) if uint8 else torch.rand(*size, generator=g)
        batch.append((image, {"boxes": boxes, "labels": labels, "image_id": i}))
    return batch


def check_collated(got, batch, what):
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        fail(f"{what}: expected (images, targets), got {describe(got)}")
    images, targets = got
    assert_tensor(images, torch.stack([im for im, _ in batch]), f"{what}: images (stacked, same dtype as the dataset's)")
    if not isinstance(targets, list):
        fail(f"{what}: targets must be a list of the {len(batch)} target dicts, got {describe(targets)}")
    if len(targets) != len(batch):
        fail(f"{what}: expected a list of {len(batch)} target dicts, got {len(targets)}")
    for i, ((_, expected), target) in enumerate(zip(batch, targets)):
        if not isinstance(target, dict) or sorted(target) != sorted(expected):
            fail(f"{what}: target {i} should be the dataset's dict with keys {sorted(expected)}, got {describe(target)}")
        assert_tensor(target["boxes"], expected["boxes"], f"{what}: target {i} boxes")
        assert_tensor(target["labels"], expected["labels"], f"{what}: target {i} labels")
        if target["image_id"] != expected["image_id"]:
            fail(f"{what}: target {i} is out of order")


@pytest.mark.part("training")
@pytest.mark.points(3)
def test_detection_collate_variable_boxes(student):
    """images stacked (dtype kept), targets a list of the dicts in order, with 0 to 5 boxes each; the batch is not modified"""
    for seed, counts in enumerate([(0, 1, 2, 3, 4, 5), (5, 0), (0,), (3,)]):
        batch = detection_batch(seed, counts, uint8=seed == 1)
        what = f"detection_collate with box counts {list(counts)}" + (", uint8 images" if seed == 1 else "")
        got, changed = student.helper("call_with_deep_snapshot")(student.detection_collate.get(), [batch])
        if changed != [False]:
            fail(f"{what}: detection_collate changed the batch it was given (an image, a target dict or its tensors); "
                 "leave the samples as they are and build the result from them")
        check_collated(got, batch, what)


@pytest.mark.part("training")
@pytest.mark.points(2)
def test_detection_collate_in_dataloader(student):
    """works as collate_fn of a DataLoader (batches of 3, last one shorter)"""
    data = detection_batch(9, (2, 0, 5, 1, 3, 0, 4))
    lib = student.lib
    loader = lib("torch.utils.data.DataLoader")(data, batch_size=3, shuffle=False, collate_fn=student.detection_collate.get())
    batches = lib("builtins.list")(loader)
    if not isinstance(batches, list) or len(batches) != 3:
        fail(f"iterating a DataLoader with your collate_fn gave {describe(batches)}, expected 3 batches")
    for b, got in enumerate(batches):
        check_collated(got, data[3 * b : 3 * b + 3], f"DataLoader batch {b}")
