"""reidlib: person re-identification training (the Bag of Tricks) and W&B-style sweeps over it."""
__version__ = "0.1.0"
