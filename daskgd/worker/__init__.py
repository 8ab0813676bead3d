"""The training task: one long-running task per worker that loads its rows and loops
batch -> kernel -> push to the parameter server -> new parameters."""

from daskgd.worker.batches import contiguous_block
from daskgd.worker.task import probe, train_partition

__all__ = ["contiguous_block", "probe", "train_partition"]
