"""How a baseline is trained by default: `edgeprune train` and `run`/`demo` when MODEL has no weights.

A module that imports nothing, so the CLI can show these in its `--help` without importing torch.

The recipe is the one measured to train a network to where users' networks are (issue 31): sgd with augmentation,
12 epochs, took resnet20 to 93.31% on Fashion-MNIST (bench/results/pruning-baselines.md). The first recipe, Adam
without augmentation, left it at 87.52%, though in 10 epochs on 6,000 of the images: the two were not run alike, so
that gap is not the recipe's alone. On the demo's digits all three recipes reach 99.63% in 12 epochs
(bench/results/train-recipe.md). Augmentation costs accuracy on short runs (lenet5, 10 epochs on 4,000 images:
80.7% with it, 85.8% without), so `--no-augment` stays for those; sgd without augmentation over the same 12 epochs
is not measured.
"""

RECIPE = "sgd"  # edgeprune.pruning.finetune.RECIPES
EPOCHS = 12
AUGMENT = True


def variant_name(recipe: str, augment: bool) -> str:
    """A recipe as messages and the benchmarks name it, "+aug" when augmented ("sgd+aug"): what
    `edgeprune.pruning.finetune.TrainSettings.variant` reads back."""
    return f"{recipe}{'+aug' if augment else ''}"
