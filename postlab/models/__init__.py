from postlab.models.io import CheckpointError, init_model, load_model, load_tokenizer, pick_device, save_pretrained_atomic
from postlab.models.presets import PRESETS
from postlab.models.tokenizer import build_tokenizer

__all__ = ["CheckpointError", "PRESETS", "build_tokenizer", "init_model", "load_model", "load_tokenizer",
           "pick_device", "save_pretrained_atomic"]
