"""SimSiam (Chen & He 2021): BYOL's loss against the online projections, gradient stopped."""

import keras
from keras import ops

from byol_keras.methods.base import SelfSupervisedModel
from byol_keras.nn.losses import symmetric_byol_loss


@keras.saving.register_keras_serializable(package="byol_keras")
class SimSiam(SelfSupervisedModel):
    """Simple Siamese learning: each view's prediction regresses onto the other's projection.

    The targets are the online network's own projections with the gradient
    stopped, so SimSiam holds no target network and pays for no EMA; it is
    BYOL with τ = 0, without the copy. It takes `SelfSupervisedModel`'s
    arguments; `use_predictor=False` drops the predictor (SimSiam's paper
    shows it then collapses).

    ```python
    # doctest: slow
    source = load_source("digits", image_size=16)
    pairs = pair_dataset(source, make_augmenter("digits", image_size=16), 32)
    model = SimSiam(build_backbone("tiny", image_size=16, width=4), projection_dim=64)
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    model.fit(pairs, epochs=1, steps_per_epoch=2)
    ```
    """

    method = "simsiam"

    def loss_and_projection(self, view1, view2, training: bool):
        """The symmetric negative cosine loss and the online projection of view 1."""
        z1, p1 = self.online_projection(view1, training)
        z2, p2 = self.online_projection(view2, training)
        return symmetric_byol_loss(p1, p2, ops.stop_gradient(z1), ops.stop_gradient(z2)), z1
