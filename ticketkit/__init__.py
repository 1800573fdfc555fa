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

__all__ = ["__version__", "TicketkitError", "IntegrityError", "TrainingDiverged", "FindConfig", "DataHparams",
           "ModelHparams", "TrainHparams", "PruneHparams", "create_model", "MODELS", "DATASETS", "Ticket", "Store",
           "find_ticket", "find_seeds", "Run", "TransferConfig", "transfer_ticket", "TransferRun"]
