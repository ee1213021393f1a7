"""ownstats.py, per view: each BN's batch variance over its moving variance, view 1, view 2, both."""
import sys, numpy as np, keras, tensorflow as tf
import byol_keras
from byol_keras.config import load_config
from byol_keras.data import source_from_config
from byol_keras.byol_experiment import _views
from byol_keras.backbones import all_layers
run = sys.argv[1]
cfg = load_config(f"{run}/config.yaml")
src = source_from_config(cfg, cfg.data.source, cfg.data.split)
aug, batches = _views(cfg, src)
it = iter(batches)
v1, v2 = next(it)
bb = keras.saving.load_model(f"{run}/backbone.keras", compile=False)
bnl = [l for l in all_layers(bb) if isinstance(l, keras.layers.BatchNormalization)]
probe = keras.Model(bb.inputs, [l.input for l in bnl] + [bb.get_layer("stage4_block2_out").output])
def ratios(views):
    outs = probe(views, training=True)
    return [np.median(np.var(x.numpy().reshape(-1, x.shape[-1]), 0) / l.moving_variance.numpy()) for l, x in zip(bnl, outs[:-1])]
r1, r2, rb = ratios(v1), ratios(v2), ratios(tf.concat([v1, v2], 0))
print("layer                      var/mv view1  view2  both")
for l, a, b, c in zip(bnl, r1, r2, rb):
    print(f"{l.name:26s} {a:8.2f} {b:6.2f} {c:6.2f}")
for name, views in (("view1", v1), ("view2", v2), ("both", tf.concat([v1, v2], 0))):
    t = probe(views, training=True)[-1]; i = probe(views, training=False)[-1]
    print(f"stage4 out rms {name}: training {float(tf.sqrt(tf.reduce_mean(t**2))):.3f} inference {float(tf.sqrt(tf.reduce_mean(i**2))):.3f}")
