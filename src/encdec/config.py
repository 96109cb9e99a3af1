"""Frozen, self-validating configs; presets; strict `section.key=value` overrides.

Every option of encdec is a field below, so `grep` finds it. Variants are made with
`dataclasses.replace`, never by mutation. A config that cannot work raises `ValueError`
naming the bad values before any compute starts.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

# Every option list is one Literal; the tuple of its names (for validation, CLI help, tests and
# analysis defaults) is derived from it, never kept in step by hand.
Wiring = Literal["final", "layerwise", "mix", "dense"]
# deepnorm-alpha / deepnorm-beta: DeepNorm's two parts alone (its residual weight; its scaled
# initialisation on plain post-LN), for ablations (model.Transformer, findings section 6);
# admin: post-LN with Admin's profiled, learned residual weights (model.admin_init)
Norm = Literal["post", "pre", "deepnorm", "deepnorm-alpha", "deepnorm-beta", "admin"]
Positions = Literal["sinusoidal", "learned"]
Activation = Literal["relu", "gelu"]
SpmModel = Literal["unigram", "bpe"]
Schedule = Literal["inverse_sqrt", "linear", "plateau"]
Precision = Literal["auto", "fp32", "bf16"]

WIRINGS: tuple[str, ...] = typing.get_args(Wiring)
NORMS: tuple[str, ...] = typing.get_args(Norm)
POSITIONS: tuple[str, ...] = typing.get_args(Positions)
ACTIVATIONS: tuple[str, ...] = typing.get_args(Activation)
SPM_MODELS: tuple[str, ...] = typing.get_args(SpmModel)
SCHEDULES: tuple[str, ...] = typing.get_args(Schedule)
PRECISIONS: tuple[str, ...] = typing.get_args(Precision)

# The paper's decoding settings (Vaswani et al. 2017, section 6.1), every command's default.
BEAM = 4
ALPHA = 0.6  # length penalty exponent (Wu et al. 2016)


def _check_minimums(cfg, section: str, **minimum: float) -> None:
    """Each named field is at least its minimum."""
    for name, low in minimum.items():
        if getattr(cfg, name) < low:
            raise ValueError(f"{section}.{name}={getattr(cfg, name)} must be >= {low}")


def _check_choices(cfg, section: str) -> None:
    """Every field annotated with a Literal holds one of its values."""
    for name, tp in typing.get_type_hints(type(cfg)).items():
        if typing.get_origin(tp) is Literal and getattr(cfg, name) not in typing.get_args(tp):
            raise ValueError(f"{section}.{name}={getattr(cfg, name)!r}; choose one of {typing.get_args(tp)}")


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """The encoder-decoder Transformer of Vaswani et al. (2017), plus the wiring switch.

    `d_head` defaults to d_model // n_heads; setting it explicitly lets h * d_head differ from
    d_model (Table 3 row A varies h with d_k = d_v fixed per row).

    One stack may be empty: n_dec_layers=0 builds an encoder-only model (BERT), n_enc_layers=0 a
    decoder-only one without cross-attention (GPT). The fields after `layer_map` exist for those
    models (`encdec params bert-base`); the defaults are the paper's.
    """

    vocab_size: int = 8000
    d_model: int = 512
    n_heads: int = 8
    d_head: int | None = None
    d_ff: int = 2048
    n_enc_layers: int = 6
    n_dec_layers: int = 6
    dropout: float = 0.1
    attn_dropout: float = 0.0
    norm: Norm = "post"
    max_len: int = 1024
    wiring: Wiring = "final"
    layer_map: tuple[int, ...] | None = None  # layerwise only: encoder layer (1-based) read by each decoder layer
    memory_states: tuple[int, ...] | None = None  # mix / dense: which of states[0..N] they read (0 = embeddings)
    surface_fusion: float = 0.0  # SurfaceFusion's lambda (Liu et al. 2021; 0 = off, the paper: 0.2)
    positions: Positions = "sinusoidal"  # learned: a max_len x d_model table (BERT, GPT)
    activation: Activation = "relu"  # of the feed-forward layer
    n_segments: int = 0  # segment (token type) embeddings added to the input (BERT: 2)
    embed_norm: bool = False  # LayerNorm on the summed input embeddings (BERT)
    pooler: bool = False  # encoder-only: tanh(W h_0 + b) over the first position (BERT)
    tie_output: bool = True  # the output projection is the embedding matrix; False adds a V x D matrix

    def __post_init__(self) -> None:
        _check_choices(self, "model")
        _check_minimums(self, "model", vocab_size=1, d_model=1, n_heads=1, d_ff=1, max_len=1, n_segments=0)
        if self.n_enc_layers < 0 or self.n_dec_layers < 0 or self.n_enc_layers + self.n_dec_layers == 0:
            raise ValueError(
                f"model.n_enc_layers={self.n_enc_layers}, model.n_dec_layers={self.n_dec_layers}: "
                "layer counts must be >= 0 and at least one stack needs layers"
            )
        if self.d_head is None and self.d_model % self.n_heads:
            raise ValueError(
                f"model.d_model={self.d_model} is not divisible by model.n_heads={self.n_heads}; "
                "change one of them or set model.d_head explicitly"
            )
        if self.d_head is not None and self.d_head < 1:
            raise ValueError(f"model.d_head={self.d_head} must be >= 1")
        for name in ("dropout", "attn_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"model.{name}={getattr(self, name)} must be in [0, 1)")
        if self.wiring != "final" and self.kind != "encoder-decoder":
            raise ValueError(f"model.wiring={self.wiring!r} needs both an encoder and a decoder ({self.kind} model)")
        if self.pooler and self.kind != "encoder":
            raise ValueError("model.pooler=true is for encoder-only models (set model.n_dec_layers=0)")
        if self.layer_map is not None:
            if self.wiring != "layerwise":
                raise ValueError(f"model.layer_map is only used with model.wiring=layerwise (got {self.wiring!r})")
            if len(self.layer_map) != self.n_dec_layers:
                raise ValueError(
                    f"model.layer_map={list(self.layer_map)} has {len(self.layer_map)} entries; "
                    f"it needs one per decoder layer ({self.n_dec_layers})"
                )
            bad = [j for j in self.layer_map if not 1 <= j <= self.n_enc_layers]
            if bad:
                raise ValueError(
                    f"model.layer_map entries {bad} are out of range: "
                    f"encoder layers are numbered 1..{self.n_enc_layers}"
                )
        if not 0.0 <= self.surface_fusion < 1.0:
            raise ValueError(f"model.surface_fusion={self.surface_fusion} must be in [0, 1) (0 = off)")
        if self.surface_fusion and self.kind != "encoder-decoder":
            raise ValueError("model.surface_fusion needs both an encoder and a decoder")
        if self.memory_states is not None:
            states = list(self.memory_states)
            if self.wiring not in ("mix", "dense"):
                raise ValueError(f"model.memory_states is used by the mix and dense wirings (got {self.wiring!r})")
            if not states:
                raise ValueError("model.memory_states=[] reads nothing; give at least one state")
            if len(set(states)) != len(states):
                raise ValueError(f"model.memory_states={states} names a state twice")
            bad = [j for j in states if not 0 <= j <= self.n_enc_layers]
            if bad:
                raise ValueError(f"model.memory_states entries {bad} are out of range: the states are numbered "
                                 f"0 (embeddings) .. {self.n_enc_layers} (Z)")

    @property
    def kind(self) -> str:
        """encoder-decoder | encoder | decoder."""
        if self.n_enc_layers and self.n_dec_layers:
            return "encoder-decoder"
        return "encoder" if self.n_enc_layers else "decoder"

    @property
    def head_dim(self) -> int:
        return self.d_head if self.d_head is not None else self.d_model // self.n_heads

    @property
    def inner_dim(self) -> int:
        """Width of the concatenated heads, h * d_head (= d_model unless d_head is set)."""
        return self.n_heads * self.head_dim


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    """Which corpus, how it is tokenised and filtered."""

    source: str = "bible:es-en"  # bible:es-en | text:SRC,TGT | synthetic:copy|reverse|sort
    vocab_size: int = 8000  # joint SentencePiece vocabulary (must equal model.vocab_size)
    spm_model: SpmModel = "unigram"
    max_len: int = 256  # training pairs with more subword tokens on either side are dropped
    cache_dir: str | None = None  # default: $ENCDEC_CACHE or ~/.cache/encdec

    def __post_init__(self) -> None:
        _check_choices(self, "data")
        if not self.source or ":" not in self.source:
            raise ValueError(
                f"data.source={self.source!r}; expected bible:es-en, text:SRC_FILE,TGT_FILE or synthetic:TASK"
            )
        _check_minimums(self, "data", vocab_size=8, max_len=2)


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Optimisation, budget and evaluation. `lr` is the peak learning rate of every schedule.

    Defaults are the CPU main job's (a fixed wall-clock budget: linear decay to zero at its end).
    The paper's schedule: train.schedule=inverse_sqrt train.warmup_steps=4000 train.lr=7e-4
    (= d_model^-0.5 * warmup^-0.5 for d_model 512; see schedules.paper_peak_lr).
    `plateau` warms up to `lr`, holds it, and multiplies it by `lr_decay` whenever
    `decay_patience` evaluations in a row found no better dev score (schedules.plateau).
    """

    seed: int = 1
    max_tokens: int = 3000  # rows * longest side (+1) per batch, padding included
    accum: int = 1  # batches per rank per optimizer step (gradient accumulation)
    lr: float = 2e-3  # measured on the main job (docs/findings.md)
    schedule: Schedule = "linear"
    warmup_steps: int = 150
    lr_decay: float = 0.5  # plateau schedule: the LR's factor at each plateau
    decay_patience: int = 2  # plateau schedule: evaluations without a better dev score that make a plateau
    label_smoothing: float = 0.1
    clip_norm: float = 1.0  # 0 disables clipping
    weight_decay: float = 0.0
    adam_betas: tuple[float, float] = (0.9, 0.98)
    adam_eps: float = 1e-9
    max_steps: int = 0  # 0 = no limit
    max_epochs: int = 0  # 0 = no limit
    max_minutes: float = 0.0  # wall-clock budget; 0 = no limit
    eval_every: int = 250  # steps between dev evaluations (and checkpoints); not counted in max_minutes
    patience: int = 0  # stop when this many evaluations in a row found no better dev score (0 = off)
    dev_bleu_sentences: int = 300  # fixed random dev subset for BLEU during training; 0 disables
    average_last: int = 1  # average the weights of the last K evaluation checkpoints at the end
    log_every: int = 20
    precision: Precision = "auto"

    def __post_init__(self) -> None:
        _check_choices(self, "train")
        _check_minimums(self, "train", max_tokens=16, accum=1, warmup_steps=0, eval_every=1, log_every=1,
                        average_last=1, patience=0, decay_patience=1)
        if self.lr <= 0:
            raise ValueError(f"train.lr={self.lr} must be > 0")
        if not 0.0 < self.lr_decay < 1.0:
            raise ValueError(f"train.lr_decay={self.lr_decay} must be in (0, 1)")
        if self.schedule == "plateau" and 0 < self.patience <= self.decay_patience:
            raise ValueError(f"train.patience={self.patience} stops the run before a plateau of "
                             f"train.decay_patience={self.decay_patience} evaluations can lower the LR; "
                             "make patience larger than decay_patience")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"train.label_smoothing={self.label_smoothing} must be in [0, 1)")
        if self.max_steps <= 0 and self.max_epochs <= 0 and self.max_minutes <= 0:
            raise ValueError("no training budget: set train.max_steps, train.max_epochs or train.max_minutes")


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(max_steps=100_000))

    def __post_init__(self) -> None:
        if self.model.vocab_size != self.data.vocab_size:
            raise ValueError(
                f"model.vocab_size={self.model.vocab_size} differs from data.vocab_size={self.data.vocab_size}; "
                "the shared embedding needs one joint vocabulary (set both, or use --vocab-size)"
            )


# --- presets -------------------------------------------------------------------------------

MODEL_PRESETS: dict[str, ModelConfig] = {
    # Vaswani et al. 2017, Table 3 "base" and "big".
    "transformer-base": ModelConfig(vocab_size=37000),
    "transformer-big": ModelConfig(
        vocab_size=37000, d_model=1024, n_heads=16, d_ff=4096, dropout=0.3
    ),
    # CPU default for the main job, chosen by measurement on bible:es-en: in a 30-minute budget
    # (a few epochs) dropout only slows learning (README, main-job table).
    "small": ModelConfig(
        vocab_size=8000, d_model=256, n_heads=4, d_ff=1024, n_enc_layers=3, n_dec_layers=3, dropout=0.0
    ),
    # Famous models, for the parameter calculator (`encdec params`); the counts are checked against
    # the published sizes in tests/test_params.py. BERT (Devlin et al. 2019): post-LN encoder, learned
    # positions, 2 segments, embedding LayerNorm, GELU, pooler; the MLM/NSP heads are not counted.
    "bert-base": ModelConfig(
        vocab_size=30522, d_model=768, n_heads=12, d_ff=3072, n_enc_layers=12, n_dec_layers=0, max_len=512,
        positions="learned", activation="gelu", n_segments=2, embed_norm=True, pooler=True,
    ),
    "bert-large": ModelConfig(
        vocab_size=30522, d_model=1024, n_heads=16, d_ff=4096, n_enc_layers=24, n_dec_layers=0, max_len=512,
        positions="learned", activation="gelu", n_segments=2, embed_norm=True, pooler=True,
    ),
    # GPT-2 XL (Radford et al. 2019) and GPT-3 175B (Brown et al. 2020): pre-LN decoder-only stacks
    # with learned positions, GELU, a final LayerNorm and the output tied to the embedding.
    "gpt2-xl": ModelConfig(
        vocab_size=50257, d_model=1600, n_heads=25, d_ff=6400, n_enc_layers=0, n_dec_layers=48, max_len=1024,
        norm="pre", positions="learned", activation="gelu",
    ),
    "gpt3": ModelConfig(
        vocab_size=50257, d_model=12288, n_heads=96, d_ff=49152, n_enc_layers=0, n_dec_layers=96, max_len=2048,
        norm="pre", positions="learned", activation="gelu",
    ),
    # Seconds-scale model for tests and synthetic tasks.
    "tiny": ModelConfig(vocab_size=64, d_model=64, n_heads=4, d_ff=128, n_enc_layers=2, n_dec_layers=2, dropout=0.0),
}


def preset(name: str) -> ModelConfig:
    if name not in MODEL_PRESETS:
        close = difflib.get_close_matches(name, MODEL_PRESETS, n=3, cutoff=0.4)
        hint = f" did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(MODEL_PRESETS)}.{hint}")
    return MODEL_PRESETS[name]


UNTIL_CONVERGED = {"patience": 5, "schedule": "inverse_sqrt", "max_steps": 30_000}
OPEN_ENDED_SCHEDULES = ("inverse_sqrt", "plateau")  # need no run length in advance


def until_converged(cfg: RunConfig, *, cap: int | None = None) -> RunConfig:
    """The convergence budget: train until `train.patience` evaluations in a row find no better
    dev score (5 unless set), under a step cap (`cap`, else 30,000). The schedule must need no run
    length in advance: a linear one (which decays to zero at a length fixed beforehand) becomes
    the paper's inverse square root; `plateau` is kept. A time or epoch budget is dropped."""
    tc = cfg.train
    schedule = tc.schedule if tc.schedule in OPEN_ENDED_SCHEDULES else UNTIL_CONVERGED["schedule"]
    return replace(cfg, train=replace(tc, patience=tc.patience or UNTIL_CONVERGED["patience"], schedule=schedule,
                                      max_minutes=0.0, max_epochs=0, max_steps=cap or UNTIL_CONVERGED["max_steps"]))


@dataclass(frozen=True)
class Recipe:
    """How a preset trains: TrainConfig fields that differ from TrainConfig's defaults (the CPU recipe)."""

    name: str
    describe: str
    fields: Any  # ModelConfig -> dict of TrainConfig fields


WARMUP_PAPER = 4000
RECIPES = {
    "cpu": Recipe("cpu", "the CPU main job's, measured on bible:es-en (docs/findings.md section 1): lr 2e-3 "
                         "times a 150-step linear warm-up and a linear decay to zero over the whole budget "
                         "(highest lr 2e-3 * (1 - 150/steps)), label smoothing 0.1, AdamW 0.9/0.98/1e-9", lambda m: {}),
    "paper": Recipe("paper", "the paper's (Vaswani et al. 2017, section 5.3): inverse-square-root schedule, "
                             f"{WARMUP_PAPER} warm-up steps, peak lr d_model^-0.5 * {WARMUP_PAPER}^-0.5, "
                             "label smoothing 0.1, Adam 0.9/0.98/1e-9",
                    lambda m: {"schedule": "inverse_sqrt", "warmup_steps": WARMUP_PAPER,
                               "lr": m.d_model**-0.5 * WARMUP_PAPER**-0.5, "label_smoothing": 0.1,
                               "adam_betas": (0.9, 0.98), "adam_eps": 1e-9}),
}
PRESET_RECIPES = {"transformer-base": "paper", "transformer-big": "paper"}  # every other preset: "cpu"


def recipe(preset_name: str) -> Recipe:
    """The recipe a preset trains with (its dropout is part of the preset itself)."""
    return RECIPES[PRESET_RECIPES.get(preset_name, "cpu")]


def run_config(preset_name: str, source: str, *, vocab_size: int | None = None, steps: int = 0, minutes: float = 0.0,
               epochs: int = 0, overrides: list[str] | None = None, model_changes: dict | None = None) -> RunConfig:
    """A RunConfig from a model preset and its training recipe, a data source and a budget, then
    `overrides` (which reach every field, the recipe's too). `model_changes` (ModelConfig fields,
    e.g. a study point's `d_model`) apply after the model overrides and before the recipe, so a
    recipe that follows the model (the paper's peak lr, d_model^-0.5) follows them too.

    The presets' vocabulary sizes are the paper's (for `encdec params`); training learns its own
    joint vocabulary: 8000 pieces for real corpora, at most 64 for the synthetic tasks."""
    vs = vocab_size or (64 if source.startswith("synthetic:") else 8000)
    overrides = overrides or []
    model_overrides = [o for o in overrides if o.strip().startswith("model.")]
    cfg = apply_overrides(RunConfig(model=replace(preset(preset_name), vocab_size=vs),
                                    data=DataConfig(source=source, vocab_size=vs),
                                    train=TrainConfig(max_steps=steps, max_minutes=minutes, max_epochs=epochs)),
                          model_overrides)
    if model_changes:
        cfg = replace(cfg, model=replace(cfg.model, **model_changes))
    # the recipe sees the model as overridden (the paper's peak lr follows d_model), then the rest applies
    cfg = replace(cfg, train=replace(cfg.train, **recipe(preset_name).fields(cfg.model)))
    return apply_overrides(cfg, [o for o in overrides if o not in model_overrides])


# --- strict overrides ----------------------------------------------------------------------

def _parse_value(text: str, tp: Any, key: str) -> Any:
    """Parse `text` to the annotated field type `tp` (str annotations are resolved by the caller)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if text.lower() in ("none", "null") and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _parse_value(text, arg, key)
            except ValueError as e:
                errors.append(str(e))
        raise ValueError("; ".join(errors))
    if origin is Literal:
        if text not in args:
            raise ValueError(f"{key}={text!r}; choose one of {', '.join(map(str, args))}")
        return text
    if origin is tuple:
        try:
            items = json.loads(text) if text.strip().startswith("[") else [t for t in text.split(",") if t.strip()]
        except json.JSONDecodeError as e:
            raise ValueError(f"{key}={text!r} is not a list: {e}") from None
        elem = args[0]
        return tuple(_parse_value(str(x), elem, key) for x in items)
    if tp is bool:
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{key}={text!r} is not a boolean (true/false)")
    if tp is int:
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"{key}={text!r} is not an integer") from None
    if tp is float:
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"{key}={text!r} is not a number") from None
    if tp is str:
        return text
    raise ValueError(f"{key}: cannot parse values of type {tp}")


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=False)


def all_keys(cfg: RunConfig) -> list[str]:
    return [f"{sec.name}.{f.name}" for sec in fields(cfg) for f in fields(getattr(cfg, sec.name))]


def apply_overrides(cfg: RunConfig, overrides: list[str]) -> RunConfig:
    """Apply `section.key=value` strings; unknown keys fail with the closest valid names."""
    changes: dict[str, dict[str, Any]] = {}
    keys = all_keys(cfg)
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like section.key=value (e.g. train.lr=3e-4)")
        key, text = item.split("=", 1)
        key = key.strip()
        if key not in keys:
            close = difflib.get_close_matches(key, keys, n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else f"; valid keys: {', '.join(keys)}"
            raise ValueError(f"unknown config key {key!r}{hint}")
        section, name = key.split(".", 1)
        tp = _field_types(type(getattr(cfg, section)))[name]
        changes.setdefault(section, {})[name] = _parse_value(text.strip(), tp, key)
    sections = {sec: replace(getattr(cfg, sec), **vals) for sec, vals in changes.items()}
    return replace(cfg, **sections)


# --- JSON round trip -----------------------------------------------------------------------

def to_dict(cfg: RunConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def from_dict(d: dict[str, Any]) -> RunConfig:
    """Strict inverse of `to_dict`: unknown or missing sections/keys raise ValueError."""
    out = {}
    for sec in fields(RunConfig):
        if sec.name not in d:
            raise ValueError(f"config is missing section {sec.name!r}")
        cls = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig}[sec.name]
        known = {f.name for f in fields(cls)}
        unknown = set(d[sec.name]) - known
        if unknown:
            raise ValueError(f"config section {sec.name!r} has unknown keys {sorted(unknown)}")
        # JSON has lists only where the config has tuples
        out[sec.name] = cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d[sec.name].items()})
    extra = set(d) - {f.name for f in fields(RunConfig)}
    if extra:
        raise ValueError(f"config has unknown sections {sorted(extra)}")
    return RunConfig(**out)


def save_json(cfg: RunConfig, path: Path) -> None:
    path.write_text(json.dumps(to_dict(cfg), indent=2) + "\n")


def load_json(path: Path) -> RunConfig:
    try:
        d = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read config {path}: {e}") from None
    return from_dict(d)
