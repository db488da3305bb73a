"""Worker side of every trained test (a2-a5): copies of a model's weights, and predictions once per state dict.

The trusted process sends the trained weights, shuffled copies of them and the weights before training in an
order it keeps secret: nothing here says which is which, so a model can tell the real evaluation from a control
only by looking at its weights (the counterfactual training data catches a model that does)."""
import torch


def state_copy(module) -> dict:
    """A detached copy of ``module``'s state dict."""
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def outputs_with_states(predict, module, states) -> list:
    """[``predict()`` with ``module`` holding each of ``states``], in the order the trusted process sent them."""
    outputs = []
    for state in states:
        module.load_state_dict(state)
        outputs.append(predict())
    return outputs


def train_one_cycle(model, batches: list, loss_of, steps: int, lr: float) -> None:
    """The trained tests' recipe (a3-a5): ``steps`` AdamW steps (weight decay 1e-4) with a one-cycle learning rate up
    to ``lr`` (10% warm-up), in training mode, cycling through ``batches``; ``loss_of(model, batch)`` is a scalar."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.1)
    model.train()
    for step in range(steps):
        loss = loss_of(model, batches[step % len(batches)])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
