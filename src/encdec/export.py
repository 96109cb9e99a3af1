"""Export a trained run to Hugging Face MarianMT (then CTranslate2) for serving with their tools.

MarianMT is the paper's post-LN encoder-decoder with sinusoidal positions and one shared
embedding, so a `final`-wiring, post-LN encdec model maps onto it weight for weight, with two
differences handled here:

- Fused projections: encdec's Q/K/V (self) and K/V (cross) are one matrix each; Marian has
  q_proj, k_proj, v_proj. They are split.
- Position layout: encdec interleaves sin/cos over the model dimensions (paper section 3.5,
  PE(pos, 2i) = sin, PE(pos, 2i+1) = cos); Marian puts all sines first, then all cosines, and
  computes its table itself. Permuting the model dimensions (the residual stream) by
  [0, 2, 4, ..., 1, 3, 5, ...] in every weight that reads or writes it gives an exactly
  equivalent network whose positions are Marian's. LayerNorm, attention and the tied output
  layer are all equivariant under such a permutation, so the logits are unchanged.

Other wirings and pre-LN have no Hugging Face architecture; they are refused with the reason.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from torch import Tensor

from encdec.checkpoint import load_run
from encdec.data.vocab import BOS, EOS, PAD, UNK, Vocab


def exportable(cfg) -> None:
    """Raise ValueError saying why a model has no MarianMT equivalent."""
    m = cfg.model
    reasons = []
    if m.wiring != "final":
        reasons.append(f"wiring={m.wiring} (MarianMT's decoder layers all read the final encoder output)")
    if m.norm not in ("post", "deepnorm-beta"):  # deepnorm-beta is post-LN with another initialisation
        reasons.append(f"norm={m.norm} (MarianMT is plain post-LN: no pre-LN, no DeepNorm or Admin residual weights)")
    if m.kind != "encoder-decoder":
        reasons.append(f"a {m.kind}-only model")
    if m.inner_dim != m.d_model:
        reasons.append(f"n_heads*d_head={m.inner_dim} != d_model={m.d_model}")
    if m.positions != "sinusoidal" or m.activation != "relu" or m.n_segments or m.embed_norm or not m.tie_output:
        reasons.append("options MarianMT lacks (learned positions, GELU, segments, embedding norm or untied output)")
    if m.d_model % 2:
        reasons.append(f"odd d_model={m.d_model}")
    if reasons:
        raise ValueError("cannot export to Hugging Face MarianMT: " + "; ".join(reasons))


def marian_permutation(d_model: int) -> Tensor:
    """Index j of the Marian model's dimensions holds encdec's dimension perm[j]."""
    return torch.cat([torch.arange(0, d_model, 2), torch.arange(1, d_model, 2)])


def marian_state_dict(model) -> dict[str, Tensor]:
    """encdec weights -> MarianMTModel state dict (positions excluded: Marian computes them)."""
    m = model.cfg
    p = marian_permutation(m.d_model)
    sd: dict[str, Tensor] = {}

    def lin(prefix: str, weight: Tensor, bias: Tensor, *, permute_in: bool, permute_out: bool) -> None:
        w = weight[:, p] if permute_in else weight
        sd[f"{prefix}.weight"] = (w[p] if permute_out else w).contiguous()
        sd[f"{prefix}.bias"] = (bias[p] if permute_out else bias).contiguous()

    def norm(prefix: str, ln) -> None:
        sd[f"{prefix}.weight"] = ln.weight[p].contiguous()
        sd[f"{prefix}.bias"] = ln.bias[p].contiguous()

    def self_attn(prefix: str, attn) -> None:
        for name, w, b in zip(("q_proj", "k_proj", "v_proj"), attn.qkv.weight.chunk(3), attn.qkv.bias.chunk(3)):
            lin(f"{prefix}.{name}", w, b, permute_in=True, permute_out=False)
        lin(f"{prefix}.out_proj", attn.out.weight, attn.out.bias, permute_in=False, permute_out=True)

    def cross_attn(prefix: str, attn) -> None:
        lin(f"{prefix}.q_proj", attn.q.weight, attn.q.bias, permute_in=True, permute_out=False)
        for name, w, b in zip(("k_proj", "v_proj"), attn.kv.weight.chunk(2), attn.kv.bias.chunk(2)):
            lin(f"{prefix}.{name}", w, b, permute_in=True, permute_out=False)
        lin(f"{prefix}.out_proj", attn.out.weight, attn.out.bias, permute_in=False, permute_out=True)

    def ffn(prefix: str, f) -> None:
        lin(f"{prefix}.fc1", f.w1.weight, f.w1.bias, permute_in=True, permute_out=False)
        lin(f"{prefix}.fc2", f.w2.weight, f.w2.bias, permute_in=False, permute_out=True)

    with torch.no_grad():
        sd["model.shared.weight"] = model.embed.weight[:, p].contiguous()
        for i, layer in enumerate(model.encoder):
            pre = f"model.encoder.layers.{i}"
            self_attn(f"{pre}.self_attn", layer.self_attn)
            norm(f"{pre}.self_attn_layer_norm", layer.norm1)
            ffn(pre, layer.ffn)
            norm(f"{pre}.final_layer_norm", layer.norm2)
        for i, layer in enumerate(model.decoder):
            pre = f"model.decoder.layers.{i}"
            self_attn(f"{pre}.self_attn", layer.self_attn)
            norm(f"{pre}.self_attn_layer_norm", layer.norm1)
            cross_attn(f"{pre}.encoder_attn", layer.cross_attn)
            norm(f"{pre}.encoder_attn_layer_norm", layer.norm2)
            ffn(pre, layer.ffn)
            norm(f"{pre}.final_layer_norm", layer.norm3)
        sd["final_logits_bias"] = torch.zeros(1, m.vocab_size)
    return {k: v.detach().float().cpu() for k, v in sd.items()}


def marian_config(cfg) -> dict:
    m = cfg.model
    return {
        "model_type": "marian", "architectures": ["MarianMTModel"], "vocab_size": m.vocab_size,
        "decoder_vocab_size": m.vocab_size, "d_model": m.d_model, "encoder_layers": m.n_enc_layers,
        "decoder_layers": m.n_dec_layers, "encoder_attention_heads": m.n_heads, "decoder_attention_heads": m.n_heads,
        "encoder_ffn_dim": m.d_ff, "decoder_ffn_dim": m.d_ff, "activation_function": "relu",
        "max_position_embeddings": m.max_len, "scale_embedding": True, "dropout": m.dropout,
        "attention_dropout": m.attn_dropout, "activation_dropout": 0.0, "pad_token_id": PAD, "eos_token_id": EOS,
        "bos_token_id": BOS, "decoder_start_token_id": BOS, "forced_eos_token_id": EOS,
        "share_encoder_decoder_embeddings": True, "tie_word_embeddings": True, "is_encoder_decoder": True,
        "num_beams": 4, "max_length": m.max_len,
    }


def export_hf(run: Path, out: Path) -> Path:
    """Write a MarianMTModel folder (config.json, model.safetensors, generation_config.json) and the
    SentencePiece tokenizer files MarianTokenizer reads (source.spm = target.spm, vocab.json)."""
    from safetensors.torch import save_file

    cfg, model = load_run(Path(run))
    exportable(cfg)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_file(marian_state_dict(model.cpu().eval()), str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(marian_config(cfg), indent=2) + "\n")
    gen = {"decoder_start_token_id": BOS, "eos_token_id": EOS, "pad_token_id": PAD, "forced_eos_token_id": EOS,
           "bad_words_ids": [[PAD]], "num_beams": 4, "max_length": cfg.model.max_len}
    (out / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")
    vocab = Vocab(Path(run) / "vocab.model")
    for name in ("source.spm", "target.spm"):
        shutil.copyfile(vocab.path, out / name)
    pieces = {vocab.sp.id_to_piece(i): i for i in range(vocab.size)}
    # a model larger than its corpus's vocabulary keeps its extra rows; name them so ids stay aligned
    pieces.update({f"<unused{i}>": i for i in range(vocab.size, cfg.model.vocab_size)})
    (out / "vocab.json").write_text(json.dumps(pieces, ensure_ascii=False, indent=0) + "\n")
    special = {"eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>", "model_max_length": cfg.model.max_len,
               "separate_vocabs": False, "tokenizer_class": "MarianTokenizer"}
    assert (vocab.sp.id_to_piece(PAD), vocab.sp.id_to_piece(UNK), vocab.sp.id_to_piece(EOS)) == \
        ("<pad>", "<unk>", "</s>"), "encdec vocabularies reserve ids 0, 1, 3 for <pad>, <unk>, </s>"
    (out / "tokenizer_config.json").write_text(json.dumps(special, indent=2) + "\n")
    return out


def export_ct2(run: Path, out: Path, *, quantization: str | None = None) -> Path:
    """Convert through the Hugging Face export with CTranslate2's own converter.

    CTranslate2's Marian loader assumes Opus-MT's conventions (<pad> is the last token and
    decoding starts from a zero embedding) and would drop the last vocabulary row; encdec's export
    keeps <pad> at 0 and starts from <s>, like encdec. So the conversion uses ct2's BART loader
    (same layer layout) with Marian's post-LN settings, for the duration of the call only.
    """
    import tempfile

    try:
        from ctranslate2.converters import TransformersConverter
        from ctranslate2.converters import transformers as ct2t
    except ImportError:
        raise ValueError("CTranslate2 is not installed: pip install ctranslate2 transformers") from None

    class EncdecMarianLoader(ct2t.BartLoader):
        @property
        def architecture_name(self):
            return "MarianMTModel"

        def get_model_spec(self, model):
            model.config.normalize_before = False  # post-LN, no embedding LayerNorm
            model.config.normalize_embedding = False
            return super().get_model_spec(model)

        def set_config(self, config, model, tokenizer):
            super().set_config(config, model, tokenizer)  # decoder_start_token = <s> from the config
            config.bos_token = "<s>"  # MarianTokenizer has none; ct2 wants a string

    with tempfile.TemporaryDirectory() as tmp:
        hf_dir = export_hf(run, Path(tmp) / "hf")
        saved = ct2t._MODEL_LOADERS.get("MarianConfig")
        ct2t._MODEL_LOADERS["MarianConfig"] = EncdecMarianLoader()
        try:
            TransformersConverter(str(hf_dir)).convert(str(out), quantization=quantization, force=True)
        finally:
            ct2t._MODEL_LOADERS["MarianConfig"] = saved
    return Path(out)
