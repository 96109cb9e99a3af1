import pytest

from encdec.config import DataConfig, ModelConfig, RunConfig, TrainConfig, apply_overrides, from_dict, preset, to_dict


def test_head_dim_default_and_explicit():
    assert ModelConfig(d_model=512, n_heads=8).head_dim == 64
    cfg = ModelConfig(d_model=512, n_heads=16, d_head=64)  # h * d_head != d_model is allowed (Table 3 row A)
    assert cfg.inner_dim == 1024


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(d_model=500, n_heads=8), "not divisible"),
    (dict(n_enc_layers=0, n_dec_layers=0), "at least one stack"),
    (dict(wiring="sideways"), "wiring"),
    (dict(dropout=1.5), "dropout"),
    (dict(wiring="layerwise", layer_map=(1, 2)), "one per decoder layer"),
    (dict(wiring="layerwise", layer_map=(1, 2, 3, 4, 5, 9)), "out of range"),
    (dict(layer_map=(1, 2, 3, 4, 5, 6)), "only used with"),
])
def test_invalid_model_configs_name_the_values(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        ModelConfig(**kwargs)


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(lr_decay=1.0), "lr_decay"),
    (dict(decay_patience=0), "decay_patience"),
    (dict(schedule="plateau", patience=2, decay_patience=2), "before a plateau"),
])
def test_invalid_plateau_settings_name_the_values(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        TrainConfig(max_steps=10, **kwargs)


def test_no_budget_is_an_error():
    with pytest.raises(ValueError, match="budget"):
        TrainConfig()


def test_unknown_preset_suggests():
    with pytest.raises(ValueError, match="transformer-base"):
        preset("transformer-bse")


def test_overrides_parse_types_and_reject_unknown_keys():
    cfg = RunConfig()
    out = apply_overrides(cfg, ["train.lr=3e-4", "model.n_heads=4", "model.wiring=layerwise",
                                "model.layer_map=[1,2,3,4,5,6]", "model.d_head=none", "train.adam_betas=0.9,0.99"])
    assert out.train.lr == 3e-4 and out.model.n_heads == 4 and out.model.layer_map == (1, 2, 3, 4, 5, 6)
    assert out.model.d_head is None and out.train.adam_betas == (0.9, 0.99)
    with pytest.raises(ValueError, match="did you mean train.lr"):
        apply_overrides(cfg, ["train.lrr=1"])
    with pytest.raises(ValueError, match="not an integer"):
        apply_overrides(cfg, ["model.n_heads=four"])
    with pytest.raises(ValueError, match="choose one of"):
        apply_overrides(cfg, ["model.norm=middle"])


def test_vocab_sizes_must_agree():
    with pytest.raises(ValueError, match="joint vocabulary"):
        RunConfig(model=ModelConfig(vocab_size=100), data=DataConfig(vocab_size=200), train=TrainConfig(max_steps=1))


def test_json_round_trip_is_strict():
    cfg = apply_overrides(RunConfig(), ["model.wiring=layerwise", "model.layer_map=6,5,4,3,2,1"])
    assert from_dict(to_dict(cfg)) == cfg
    d = to_dict(cfg)
    d["model"]["n_head"] = 3
    with pytest.raises(ValueError, match="unknown keys"):
        from_dict(d)


def test_presets_carry_their_training_recipe():
    from encdec.config import TrainConfig, recipe, run_config

    base = run_config("transformer-base", "bible:es-en", steps=10)
    assert (base.train.schedule, base.train.warmup_steps) == ("inverse_sqrt", 4000)
    assert base.train.lr == pytest.approx(512**-0.5 * 4000**-0.5) and base.model.dropout == 0.1
    big = run_config("transformer-big", "bible:es-en", steps=10)
    assert big.train.lr == pytest.approx(1024**-0.5 * 4000**-0.5) and big.model.dropout == 0.3
    small = run_config("small", "bible:es-en", steps=10)
    assert small.train == TrainConfig(max_steps=10)  # the CPU recipe is TrainConfig's defaults
    assert recipe("small").name == "cpu" and recipe("transformer-base").name == "paper"
    overridden = run_config("transformer-base", "bible:es-en", steps=10, overrides=["train.warmup_steps=100"])
    assert overridden.train.warmup_steps == 100 and overridden.train.schedule == "inverse_sqrt"
