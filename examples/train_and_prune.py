"""Train a small CNN with a plain PyTorch loop, then prune it with edgeprune using that same loop.

    python examples/train_and_prune.py                      # Fashion-MNIST if installed, else scikit-learn digits
    python examples/train_and_prune.py --limit 300 --epochs 1
    python examples/train_and_prune.py --device local --target-ms 0.2   # a latency budget on this CPU

edgeprune never sees the data: it calls `finetune(model, epochs)` and `evaluate(model)` below, so any loop,
optimiser or data pipeline works. Fashion-MNIST comes from Debian's dataset-fashion-mnist package
(`apt-get install dataset-fashion-mnist`); without it the script uses scikit-learn's 8x8 digits.
"""

from __future__ import annotations

import argparse
import gzip
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import edgeprune as ep

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (the MNIST format): a 4-byte magic whose last byte is the rank, the sizes, then uint8 data."""
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    rank = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(rank))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * rank).reshape(shape)


def load_data(limit: int) -> tuple[TensorDataset, TensorDataset]:
    """(train, test) as float images in [0, 1] with a channel axis; at most `limit` training images."""
    if (FASHION_MNIST / "train-images-idx3-ubyte.gz").exists():
        parts = []
        for split in ("train", "t10k"):
            images = read_idx(FASHION_MNIST / f"{split}-images-idx3-ubyte.gz").astype(np.float32) / 255.0
            labels = read_idx(FASHION_MNIST / f"{split}-labels-idx1-ubyte.gz").astype(np.int64)
            parts.append((images[:, None], labels))
        (train_x, train_y), (test_x, test_y) = parts
        test_x, test_y = test_x[: max(limit // 2, 100)], test_y[: max(limit // 2, 100)]
    else:
        from sklearn.datasets import load_digits

        digits = load_digits()
        images, labels = (digits.images[:, None] / 16.0).astype(np.float32), digits.target.astype(np.int64)
        train_x, train_y, test_x, test_y = images[:-300], labels[:-300], images[-300:], labels[-300:]
    train = TensorDataset(torch.from_numpy(train_x[:limit]), torch.from_numpy(train_y[:limit]))
    return train, TensorDataset(torch.from_numpy(test_x), torch.from_numpy(test_y))


def make_model(channels: int, classes: int) -> nn.Module:
    def block(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

    return nn.Sequential(
        *block(channels, 32),
        *block(32, 32),
        nn.MaxPool2d(2),
        *block(32, 64),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, classes),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=5000, help="training images to use")
    parser.add_argument("--epochs", type=int, default=3, help="training epochs (the fine-tune gets as many)")
    parser.add_argument("--flops", default="50%", help="FLOPs budget: a number or a share of the original")
    parser.add_argument("--device", help="prune to a latency budget on this device instead (e.g. local)")
    parser.add_argument("--target-ms", type=float, help="latency budget in ms (with --device)")
    parser.add_argument("--out", default="pruned_model.pt", help="where to save the pruned model")
    parser.add_argument("--population", type=int, default=6, help="LeGR search: first candidates")
    parser.add_argument("--generations", type=int, default=6, help="LeGR search: candidates evolved from them")
    args = parser.parse_args()
    torch.manual_seed(0)
    train_set, test_set = load_data(args.limit)
    loader = DataLoader(train_set, batch_size=32, shuffle=True)

    def finetune(model: nn.Module, epochs: int) -> None:
        optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
        model.train()
        for _ in range(epochs):
            for images, labels in loader:
                optimizer.zero_grad()
                nn.functional.cross_entropy(model(images), labels).backward()
                optimizer.step()

    def evaluate(model: nn.Module) -> float:
        model.eval()
        correct = 0
        with torch.no_grad():
            for images, labels in DataLoader(test_set, batch_size=256):
                correct += int((model(images).argmax(1) == labels).sum())
        return correct / len(test_set)

    example = train_set[0][0][None]  # one image as a batch: what edgeprune traces and measures the model with
    model = make_model(example.shape[1], 10)
    finetune(model, args.epochs)
    print(f"trained: accuracy {evaluate(model):.3f}")

    budget = {"target_flops": args.flops} if args.device is None else {"target_ms": args.target_ms}
    device = ep.device(args.device) if args.device else None
    small, result = ep.prune(
        model,
        example,
        **budget,
        device=device,
        finetune=finetune,
        evaluate=evaluate,
        epochs=args.epochs,
        population=args.population,
        generations=args.generations,
        search_minutes=1.0,
    )
    print(f"pruned to {result.target}: within budget {result.within_budget}")
    print(f"  FLOPs {result.original_flops:,} -> {result.flops:,}")
    print(f"  parameters {result.original_params:,} -> {result.params:,}")
    if result.predicted_ms is not None:
        print(f"  predicted {result.original_predicted_ms:.3f} ms -> {result.predicted_ms:.3f} ms on {args.device}")
    print(f"  accuracy {result.metric_before:.3f} -> {result.metric_after:.3f}")
    torch.save(small, args.out)  # an fx GraphModule: loads with torch.load(path, weights_only=False)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
