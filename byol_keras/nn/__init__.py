"""The networks' parts the methods are made of, none of which reads a config.

- `backbones.py`: `build_backbone` (the tiny CNN, ResNets, `keras.applications`).
- `heads.py`: the projector and predictor MLPs.
- `losses.py`: BYOL's regression loss, NT-Xent, the collapse indicator.
- `target.py`: the EMA target network's frozen copy of the online one.
- `batchnorm.py`: the BatchNorm layer the backbones and heads use.
- `init_weights.py`: a backbone's starting weights (a file or ImageNet).
- `hub.py`: a backbone from a local KerasHub preset, with its weights (the hub extra).
- `precision.py`: compute dtypes and float32 copies under mixed precision.

The modules are imported one by one (`from byol_keras.nn.backbones import build_backbone`);
this file imports none of them, so that importing one loads no other.
"""
