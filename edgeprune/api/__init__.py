"""The Python API: the CLI's stages as functions over a user's own `nn.Module` and example input.

    import edgeprune as ep
    with ep.device("local") as dev:             # the local farm runs for the block
        ep.profile(model, x, dev)                # measure the latency table the model needs
        small, result = ep.prune(model, x, target_ms=2.0, device=dev, finetune=my_finetune, evaluate=my_eval)
        compiled = ep.compile(small, x, dev, "artifacts/")
        print(ep.verify(compiled, dev, target_ms=2.0).measured_ms)
    ep.run("resnet20", "local", "0.5x", data="digits")  # the closed loop: measured on the device until it holds
    ep.sweep("resnet20", "local", ["0.8x", "0.5x", "0.3x"], data="digits")  # one search, many measured targets

The CLI's commands are thin shells over these functions (one code path): each parses its flags, calls the
function here and prints what it returns. A stage takes the user's model with an example input, or a MODEL
string as the CLI takes it (`input_shape=`, `classes=`, `width=` for its --input-shape, --classes, --width);
a module is traced to the same fx graph a MODEL argument becomes. Heavy imports (torch, TVM) happen inside the
functions, because the CLI imports this package and `edgeprune --help` must stay fast.

models.py (device, the model as stages take it), stages.py (profile, latency_model, compile, verify,
deploy), training.py (train), pruning.py (prune), loops.py (run, sweep: the closed loop over a resumable folder).
"""

# `name as name`: re-exported; `edgeprune/__init__.py` lists them in its `__all__`
from edgeprune.api.loops import run as run
from edgeprune.api.loops import sweep as sweep
from edgeprune.api.models import device as device
from edgeprune.api.pruning import PruneResult as PruneResult
from edgeprune.api.pruning import prune as prune
from edgeprune.api.stages import LatencyModel as LatencyModel
from edgeprune.api.stages import compile as compile
from edgeprune.api.stages import deploy as deploy
from edgeprune.api.stages import latency_model as latency_model
from edgeprune.api.stages import profile as profile
from edgeprune.api.stages import verify as verify
from edgeprune.api.training import train as train
