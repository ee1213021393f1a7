"""The one table of downstream tasks: it covers every config section that training does not read."""

import dataclasses

from byol_keras.config import Config
from byol_keras.tasks import task_sections

# What training reads, listed by hand: every other section is a downstream task's.
TRAINING_SECTIONS = {"data", "augment", "model", "optimizer", "train"}


def test_every_config_section_beyond_training_belongs_to_a_task():
    sections = {field.name for field in dataclasses.fields(Config)}
    assert set(task_sections()) == sections - TRAINING_SECTIONS
