"""ticketkit: lottery-ticket research on text classifiers."""
from .version import __version__  # noqa: F401
from .errors import IntegrityError, TicketkitError, TrainingDiverged  # noqa: E402
from .config import DataHparams, FindConfig, ModelHparams, PruneHparams, TrainHparams  # noqa: E402
from .models import create_model, MODELS  # noqa: E402
from .data import DATASETS  # noqa: E402
from .ticket import Ticket  # noqa: E402
from .store import Store  # noqa: E402
from .find import find_ticket, Run  # noqa: E402
from .seeds import find_seeds  # noqa: E402
from .transfer import TransferConfig, transfer_ticket, TransferRun  # noqa: E402
from . import api as _api, report as _report_pkg, sweep as _sweep_pkg, verify as _verify_mod  # noqa: E402
from .api import pull, push, show  # noqa: E402,F401


def _callable(module, fn):
    """`ticketkit.report`, `.sweep` and `.verify` are both subpackages/modules and the functions the CLI's commands
    are: importing a submodule rebinds its parent's attribute to the module, so a plain function of that name here
    would be replaced by the module at the next `import ticketkit.sweep.live`. The module itself is made callable
    instead (a module's __class__ may be a ModuleType subclass), so `ticketkit.report(...)` and
    `ticketkit.report.show` both keep working, whatever is imported in which order."""
    import types

    module.__class__ = type(f"Callable{module.__class__.__name__}", (types.ModuleType,),
                            {"__call__": staticmethod(fn), "__doc__": fn.__doc__})
    return module


report = _callable(_report_pkg, _api.report)
sweep = _callable(_sweep_pkg, _api.sweep)
verify = _callable(_verify_mod, _api.verify)

__all__ = ["__version__", "TicketkitError", "IntegrityError", "TrainingDiverged", "FindConfig", "DataHparams",
           "ModelHparams", "TrainHparams", "PruneHparams", "create_model", "MODELS", "DATASETS", "Ticket", "Store",
           "find_ticket", "find_seeds", "Run", "TransferConfig", "transfer_ticket", "TransferRun", "push", "pull", "show",
           "verify", "report", "sweep"]
