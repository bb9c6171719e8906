"""Data-parallel training over MPI, with Keras 3's ``keras.distribution`` words.

    import lamina as keras
    keras.distribution.initialize()                       # joins the MPI world under mpirun / srun
    keras.distribution.set_distribution(keras.distribution.DataParallel())
    model.fit(x, y, batch_size=64)                         # 64 = the GLOBAL batch, split over the ranks

Every rank runs the same program on the same data. With a DataParallel distribution set, fit / evaluate /
predict give each rank a contiguous slice of every global batch; the training step sums the gradients of
all ranks, each weighted by the share of the global batch it computed, in all-reduces over flat buffers
(buckets of up to 25 MB, started during the backward pass), so every rank applies the same update as one
process with the whole batch would (to float32 rounding). See docs/distributed.md for what is guaranteed
and the measured costs.

The models reach this package through a narrow seam (``_runtime``): ``shard`` a batch, ``reduce_loss``,
``gradients`` (lamina.grad and the all-reduce), ``reduce_metrics``, ``gather`` predictions, ``begin`` a fit
(broadcast rank 0's state) and ``is_chief`` (only rank 0 prints and writes files). Without a distribution
set, each is a no-op.
"""
from ._runtime import (DataParallel, Distribution, MPI_INSTALL_HINT, distribution, initialize, is_chief,
                       is_initialized, list_devices, process_count, process_index, set_distribution)

__all__ = ["DataParallel", "Distribution", "distribution", "initialize", "is_chief", "is_initialized",
           "list_devices", "process_count", "process_index", "set_distribution", "MPI_INSTALL_HINT"]
