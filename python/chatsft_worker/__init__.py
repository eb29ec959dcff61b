"""chatsft's PyTorch training worker (issue 12).

The TypeScript side (src/torch/) prepares rows, data order and learning
rates, writes them into a run folder, and launches
``python -m chatsft_worker JOB.json`` (through ``torch.distributed.run`` for
several processes). This package depends on PyTorch and the standard
library only.
"""

MIN_TORCH = (1, 13)
