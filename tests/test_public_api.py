import byol_keras


def test_every_public_name_resolves():
    for name in byol_keras.__all__:
        assert getattr(byol_keras, name) is not None, name


def test_readme_api_example_trains(tmp_path):
    import keras

    from byol_keras import BYOL, build_backbone, load_source, make_augmenter, pair_dataset

    source = load_source("digits", image_size=16)
    pairs = pair_dataset(source, make_augmenter("digits", image_size=16), batch_size=64)
    model = BYOL(
        build_backbone("tiny", image_size=16, width=4),
        projection_dim=8,
        projector_hidden_dim=16,
        predictor_hidden_dim=16,
    )
    model.compile(optimizer=keras.optimizers.AdamW(1e-3, weight_decay=1e-4))
    history = model.fit(pairs, epochs=1, steps_per_epoch=3, verbose=0)
    assert len(history.history["loss"]) == 1
    model.online_backbone.save(tmp_path / "backbone.keras")
    assert (tmp_path / "backbone.keras").stat().st_size > 0
