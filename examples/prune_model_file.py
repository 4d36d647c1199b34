"""Prune a model defined in your own Python file to a FLOPs budget: no device, no data, no training.

    python examples/prune_model_file.py path/to/net.py:build --input-shape 3x32x32 --flops 50% --out small.pt

`path/to/net.py:build` is imported as `python net.py` would run it (modules beside it import), and `build()`
must return the model. Channels are chosen by weight magnitude (method 'global', criterion 'l2'), which needs
no data; fine-tune the result with your own training afterwards, or pass `finetune=` and `evaluate=` to
`ep.prune` to have the fine-tune and a LeGR search done with your code (see train_and_prune.py).
"""

from __future__ import annotations

import argparse

import torch

import edgeprune as ep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="path/to/file.py:factory (or a zoo name such as resnet20)")
    parser.add_argument("--input-shape", default="3x32x32", help="one image: CxHxW")
    parser.add_argument("--flops", default="50%", help="FLOPs budget: a number (1.5M) or a share of the original")
    parser.add_argument("--out", default="pruned_model.pt", help="where to save the pruned model")
    args = parser.parse_args()
    channels, height, width = (int(d) for d in args.input_shape.split("x"))
    example = torch.randn(1, channels, height, width)

    small, result = ep.prune(args.model, example, target_flops=args.flops, method="global", criterion="l2")
    print(f"pruned to {result.target}: within budget {result.within_budget}")
    print(f"  FLOPs {result.original_flops:,} -> {result.flops:,}")
    print(f"  parameters {result.original_params:,} -> {result.params:,}")
    for layer in result.layers:
        print(f"  {layer['name']:<24} {layer['before']:>5} -> {layer['after']:>5} channels")
    torch.save(small, args.out)  # an fx GraphModule: loads with torch.load(path, weights_only=False)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
