"""Transferring a ticket to another dataset, against the baselines that matter (Morcos et al. 2019, on text).

    transfer_ticket(source, TransferConfig(target="yelp2")) -> TransferRun

At every requested sparsity level (the source level whose *measured* density is closest) and every seed:
  transferred        the source mask over the source rewind weights, retrained on the target
  random-prune       a random mask with the source's exact per-layer counts, over the same rewind weights
  random-prune-rows  every embedding row (word) keeps its count of survivors, shuffled within the row
  random-reinit      the source mask over weights re-drawn from another seed
  fresh              a ticket found by IMP on the target itself, from the same init and vocabulary
Seeds are independent replicates (replicates.py): seed s searches the source again at seed s, and transfers that
search with its own fresh search and controls at seed s. From a single ticket the seeds vary the target training only.
All arms train under the SOURCE tokenizer (the embedding mask is indexed by it) with the same split, settings and
data order per seed. Under late resetting (rewind epoch:K / step:K) the transferred arm starts from the source's
weights after K epochs/steps of training ON THE SOURCE: it carries source training, not just a mask. The transferred ticket at 100 % is the dense reference. Each finished (arm, level, seed) cell is
written to results.json at once, so an interrupted transfer resumes where it stopped; cells can train in parallel
worker processes (one thread each) with results identical to a serial run. Cells whose mask, starting weights and
seed are bit-identical (e.g. every arm at 100 % when rewinding to init) are trained once and recorded for each arm.

The modules, one idea each:
  source      what is transferred: a run or a ticket, resolved, its tickets loaded once (verified)
  cells       the (arm, level, seed) cells and each arm's masks and starting weights (controls: ticketkit.controls)
  executors   how cells train: one by one, in worker processes, or a level's arms stacked (ticketkit.arms)
  experiment  one transfer: the plan, the target data, the record in results.json; TransferRun
  replicates  transfer_ticket: one transfer, or independent seeds (a source search, fresh search and transfer
              per seed, one results.json), or seed S's replicate alone (--replicate S)
  merge       replicates run apart, merged into the group one command would have written (`report RUN RUN...`)
  command     `ticketkit transfer` (settings from a recipe and flags; a recipe's source found first)
The settings, TransferConfig, live in ticketkit.config with the other hyperparameter dataclasses.
"""
from ..config import BATCH_ARMS, DEFAULT_LEVELS, TransferConfig
from .cells import ARMS, DENSE, _Cell, _digest, _key, arm_start
from .command import build_transfer_config, source_find_config, transfer_command
from .executors import _fresh_job, _train_job, _worker_init
from .experiment import TransferRun, _Transfer
from .replicates import transfer_name, transfer_ticket
from .source import Source, SourceLevel, check_source, resolve_source

config_from_recipe = TransferConfig.from_recipe

__all__ = ["TransferConfig", "config_from_recipe", "DEFAULT_LEVELS", "BATCH_ARMS", "ARMS", "DENSE", "arm_start",
           "Source", "SourceLevel", "check_source", "resolve_source", "TransferRun", "transfer_ticket", "transfer_name",
           "build_transfer_config", "source_find_config", "transfer_command",
           "_Cell", "_digest", "_key", "_Transfer", "_train_job", "_fresh_job", "_worker_init"]
