"""int8 weights for CPU decoding: PyTorch's dynamic quantization of every linear layer.

Weights are stored as int8 (per output channel), activations are quantized on the fly per
batch; the matrix products run in fbgemm's int8 kernels (AVX-512 VNNI where the CPU has it).
The tied output projection is untied into its own linear layer first, so the largest matrix
product of a decoding step (d_model x vocabulary) is quantized too; the embedding lookup stays
float32. CTranslate2's `int8` compute type does the same kind of thing.

PyTorch marks `torch.ao.quantization` as deprecated in favour of torchao, but it still ships
and works in torch 2.13 on CPU; torchao's CPU int8 path is not a drop-in here. The warnings
are silenced in this one place.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

from encdec.linear import to_plain
from encdec.model import Transformer


def quantize_int8(model: Transformer) -> Transformer:
    """A copy of `model` for CPU inference with int8 linear layers (the original is untouched)."""
    if next(model.parameters()).device.type != "cpu":
        raise ValueError("int8 decoding runs on the CPU (fbgemm); use --device cpu")
    q = to_plain(copy.deepcopy(model)).eval()  # torch.ao matches nn.Linear exactly
    if q.out_proj is None:  # tied: the output layer gets its own copy of the embedding matrix
        q.out_proj = nn.Linear(q.cfg.d_model, q.cfg.vocab_size, bias=False)
        q.out_proj.weight = nn.Parameter(q.embed.weight.detach().clone())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        return quantize_dynamic(q, {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)
