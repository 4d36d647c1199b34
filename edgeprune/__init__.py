"""edgeprune: profile a board once, prune a CNN to a millisecond budget, compile it with TVM, deploy it.

`import edgeprune as ep` gives the stages as functions (`edgeprune.api`): `ep.device`, `ep.profile`,
`ep.latency_model`, `ep.train`, `ep.prune`, `ep.compile`, `ep.verify`, `ep.deploy`, `ep.run`, `ep.sweep`;
the CLI is a shell over them. Importing the package loads neither torch nor TVM; each function imports what
it needs when called.
"""

# The stage packages first: importing a subpackage binds its name on this package once, when it is first
# loaded, so loading them before the API's functions of the same names keeps `ep.compile`, `ep.verify` and
# `ep.deploy` the functions however often `edgeprune.compile.compiler` and the like are imported later
# (their package __init__ files are docstrings only: cheap).
import edgeprune.compile
import edgeprune.deploy
import edgeprune.verify  # noqa: F401 - bound before the API functions, see above
from edgeprune.api import (
    LatencyModel,
    PruneResult,
    compile,
    deploy,
    device,
    latency_model,
    profile,
    prune,
    run,
    sweep,
    train,
    verify,
)
from edgeprune.errors import EdgepruneError

__version__ = "0.1.0"

__all__ = [
    "EdgepruneError",
    "LatencyModel",
    "PruneResult",
    "compile",
    "deploy",
    "device",
    "latency_model",
    "profile",
    "prune",
    "run",
    "sweep",
    "train",
    "verify",
]
