"""A plain training loop watched by dualwatch, in PyTorch or PaddlePaddle (the same code path).

Trains a small CNN on random images for a few epochs; ``Watcher`` checks the weights and
gradients every 5 steps (the edge monitor's block on the console), and writes the VisualDL guide's
``Loss/Train``, ``Learning_Rate`` and ``Time/Epoch_Duration`` to VisualDL, TensorBoard and
``metrics.jsonl`` under ``--logdir``. At each check it also logs the ESAM guide's framed report:
the loss breakdown (``train/detailed_loss/*``), a stat group of the loop's own numbers
(``train/batch/*``) and the gradient health. Runs in seconds.

    python examples/plain_loop.py --backend torch --logdir runs
    dualwatch monitor runs --once
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np

import dualwatch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["torch", "paddle"], default="torch")
    parser.add_argument("--logdir", default="runs")
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    images = rng.standard_normal((32, 3, 16, 16)).astype("float32")
    labels = rng.integers(0, 2, 32)

    if args.backend == "torch":
        import torch

        nn = torch.nn
        model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 14 * 14, 2))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
        tensor, loss_fn, clear = torch.from_numpy, nn.functional.cross_entropy, optimizer.zero_grad
        lr = optimizer.param_groups[0]["lr"]
        numpy = lambda t: t.detach().numpy()  # noqa: E731
    else:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="No ccache found")
            import paddle

        nn = paddle.nn
        model = nn.Sequential(nn.Conv2D(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 14 * 14, 2))
        optimizer = paddle.optimizer.SGD(learning_rate=0.05, parameters=model.parameters())
        tensor, loss_fn, clear = paddle.to_tensor, nn.functional.cross_entropy, optimizer.clear_grad
        lr = optimizer.get_lr()
        numpy = lambda t: t.numpy()  # noqa: E731

    step = 0
    with dualwatch.Watcher(model, every=5, logdir=f"{args.logdir}/{args.backend}") as w:
        for epoch in range(args.epochs):
            for start in range(0, len(images), 8):
                logits = model(tensor(images[start : start + 8]))
                loss_ce = loss_fn(logits, tensor(labels[start : start + 8]))
                loss_l2 = 1e-3 * sum((p**2).sum() for p in model.parameters())
                loss = loss_ce + loss_l2
                loss.backward()
                w.step(step)  # after backward, before the optimizer step
                w.log_training(step, loss=loss.item(), lr=lr)
                if step % w.every == 0:  # the ESAM guide's report, beside the check
                    correct = numpy(logits).argmax(1) == labels[start : start + 8]
                    w.log_stats(step, "batch", {"correct_rate": correct.mean(), "samples": len(correct)})
                    w.report(step, {"loss": loss, "loss_ce": loss_ce, "loss_l2": loss_l2})
                optimizer.step()
                clear()
                step += 1
            w.end_epoch(epoch)
        print(f"{args.backend}: run in {w.run_dir}")


if __name__ == "__main__":
    main()
