"""The LeGR search's default size, shared by `SearchSettings`, `run`, `sweep` and `ep.prune`.

A module that imports nothing, so the CLI can show these in its `--help` without importing torch. The sizes
come from measurement (bench/results/search.md): with candidates scored after BatchNorm re-estimation and no
training steps, an evaluation of resnet20 costs about 0.5 s of one core, so 32 + 300 candidates fit a few minutes.
"""

POPULATION = 32
GENERATIONS = 300
STEPS = 0  # Adam steps per candidate before it is scored (LeGR's tau); 0: BatchNorm re-estimation only
FINALISTS = 0  # best candidates re-judged after a short fine-tune at the search's end (measured: no gain, search.py)
