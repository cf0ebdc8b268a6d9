"""Suite-wide settings: tiny models run fastest on one thread (and 2 threads thrash on a shared 2-core box)."""

import torch

torch.set_num_threads(1)
