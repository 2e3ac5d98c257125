"""postlab: SFT vs RL post-training research at lab scale (CPU, minutes) and paper scale (GPUs)."""

__version__ = "0.1.0"
