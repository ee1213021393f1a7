"""The segmentation task: its model, training, metrics, protocol, pictures and export."""
