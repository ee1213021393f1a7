"""SimCLR (Chen et al. 2020): the NT-Xent loss between the projections of two views."""

from collections.abc import Sequence

import keras

from byol_keras.errors import UsageError
from byol_keras.methods.base import SelfSupervisedModel
from byol_keras.nn.losses import nt_xent_loss


@keras.saving.register_keras_serializable(package="byol_keras")
class SimCLR(SelfSupervisedModel):
    """A simple framework for contrastive learning: the other view is the positive.

    Every image's two views are each other's positive among all 2N views of
    the global batch, scored by the NT-Xent loss at `temperature`. There are
    no targets, so no target network and no EMA; by default no predictor
    either (`use_predictor=True` adds one).

    Args:
        backbone: the `keras.Model` to pretrain.
        projection_dim: output size of the projector (and predictor).
        projector_hidden_dim: hidden size of the projector.
        predictor_hidden_dim: hidden size of the predictor, if any.
        total_steps: length of the run in optimizer updates (see `SelfSupervisedModel`).
        augmenter: optional layer that turns an image batch into two views.
        sync_batchnorm: whether the heads' BatchNorm uses global-batch statistics.
        input_shape: shape of one image, for a backbone that declares none.
        use_predictor: whether a predictor follows the projector (`None`: no).
        temperature: NT-Xent's temperature, > 0.
        **kwargs: `keras.Model`'s, such as `name`.

    ```python
    # doctest: slow
    source = load_source("digits", image_size=16)
    pairs = pair_dataset(source, make_augmenter("digits", image_size=16), 32)
    model = SimCLR(build_backbone("tiny", image_size=16, width=4), temperature=0.1)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.fit(pairs, epochs=1, steps_per_epoch=2)
    ```
    """

    method = "simclr"

    def __init__(
        self,
        backbone: keras.Model,
        projection_dim: int = 256,
        projector_hidden_dim: int = 4096,
        predictor_hidden_dim: int = 4096,
        total_steps: int | None = None,
        augmenter: keras.layers.Layer | None = None,
        sync_batchnorm: bool | None = None,
        input_shape: Sequence[int | None] | None = None,
        use_predictor: bool | None = None,
        temperature: float = 0.2,
        **kwargs,
    ):
        if not temperature > 0.0:
            raise UsageError(f"model.temperature: must be > 0, got {temperature}")
        super().__init__(
            backbone,
            projection_dim=projection_dim,
            projector_hidden_dim=projector_hidden_dim,
            predictor_hidden_dim=predictor_hidden_dim,
            total_steps=total_steps,
            augmenter=augmenter,
            sync_batchnorm=sync_batchnorm,
            input_shape=input_shape,
            use_predictor=use_predictor,
            **kwargs,
        )
        self.temperature = float(temperature)

    def loss_and_projection(self, view1, view2, training: bool):
        """NT-Xent between the two views' outputs and the online projection of view 1."""
        z1, out1 = self.online_projection(view1, training)
        z2, out2 = self.online_projection(view2, training)
        return nt_xent_loss(out1, out2, self.temperature), z1

    def get_config(self) -> dict:
        return {**super().get_config(), "temperature": self.temperature}
