"""Run in the worker after the student's cells: the fixed training recipe of the single-object test."""


def _grader_train_single_object(model_class, loss_fn=None, steps=400, batch_size=32, image_size=64, seed=0, n_eval=128):
    """Train the student's SingleObjectDetector with the student's loss on one-object shapes; return eval predictions."""
    import torch
    import torch.nn.functional as F
    from lecture_utils.data import ShapesDataset

    if loss_fn is None:  # the grader's own multitask loss, so that only the model is judged
        def loss_fn(logits, pred, labels, boxes):
            return F.cross_entropy(logits, labels) + F.mse_loss(pred, boxes)

    torch.manual_seed(seed)
    def batch(ds, idx):
        items = [ds[i] for i in idx]
        images = torch.stack([im for im, _ in items])
        labels = torch.stack([t["labels"][0] for _, t in items])
        boxes = torch.stack([t["boxes"][0] for _, t in items]) / image_size
        return images, labels, boxes
    train = ShapesDataset(2048, image_size, seed=seed + 100, min_objects=1, max_objects=1, min_size=0.25, max_size=0.4)
    evald = ShapesDataset(n_eval, image_size, seed=seed + 200, min_objects=1, max_objects=1, min_size=0.25, max_size=0.4)
    cache = [batch(train, range(i, i + batch_size)) for i in range(0, len(train), batch_size)]
    model = model_class(3)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for step in range(steps):
        images, labels, boxes = cache[step % len(cache)]
        logits, pred = model(images)
        loss = loss_fn(logits, pred, labels, boxes)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        images, labels, boxes = batch(evald, range(n_eval))
        logits, pred = model(images)
    return logits.argmax(1), pred * image_size, labels, boxes * image_size
