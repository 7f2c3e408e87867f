"""Training and inference."""
from reidlib.engine.inference import extract_features
from reidlib.engine.trainer import Callback, TrainResult, do_train, evaluate, resolve_device, seed_everything

__all__ = ["Callback", "TrainResult", "do_train", "evaluate", "extract_features", "resolve_device", "seed_everything"]
