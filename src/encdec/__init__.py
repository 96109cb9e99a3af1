"""encdec: a lab for encoder-decoder Transformers: the paper's model, its cross-attention wiring, depth and width."""

__version__ = "0.1.0"
