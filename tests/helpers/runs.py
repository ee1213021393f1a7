"""A finished run directory as training leaves it, made in a second with a tiny backbone."""

import keras

from byol_keras.config import from_dict, save_config
from byol_keras.methods.byol import BYOL
from byol_keras.nn.backbones import build_backbone
from byol_keras.runs import RunDirectory

RUN_CONFIG = {
    "data": {"source": "digits", "val_source": "digits", "image_size": 8},
    "model": {
        "backbone": "tiny",
        "width": 4,
        "projection_dim": 8,
        "projector_hidden_dim": 16,
        "predictor_hidden_dim": 16,
    },
    "train": {"epochs": 1, "batch_size": 32},
    "eval": {"finetune_epochs": 1, "linear_max_iter": 200},
}


def make_run(root, config=RUN_CONFIG):
    """A finished run directory as training leaves it: config, model and backbone."""
    keras.utils.set_random_seed(1)
    run = RunDirectory(root).create()
    parsed = from_dict(config)
    save_config(parsed, run.config_path)
    backbone = build_backbone("tiny", parsed.data.image_size, width=parsed.model.width)
    model = BYOL(backbone, projection_dim=8, projector_hidden_dim=16, predictor_hidden_dim=16)
    model.save(run.model_path)
    backbone.save(run.backbone_path)
    run.finish({"epochs": 1})
    return run
