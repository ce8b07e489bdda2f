"""Flywheel trainer SDK: the accepted topic as training batches, read exactly once across crashes
(checkpoint first, then Kafka offsets; the checkpoint's offsets win on start), admission
(staleness, priority replay, starvation signal), model announcements the pipeline hot-swaps, and
the pipeline's feature hashing byte for byte. See python/README section in the repo README.

    from flywheel_trainer import TrainerClient
    client = TrainerClient.open(prefix="flywheel", group_id="flywheel.ranker", trainer="ranker",
                                checkpoint_path="ranker.ckpt")
    for batch in client.batches():
        train(batch.decisions)
        client.commit(batch, lambda cp: cp.write({"step": step}, arrays))

The torch parts (``FlywheelDataset``, ``flywheel_trainer.scorer``) import torch lazily.
"""

from .admission import AnnouncedVersions, ReplayBuffer, ReplayConfig, StalenessConfig, StarvationConfig, StarvationMonitor, admit_by_staleness
from .checkpoint import Checkpoint, TopicPartitionOffset, read_checkpoint, write_checkpoint
from .client import CommitResult, Consumed, TrainerClient, TrainingBatch
from .features import FeatureConfig, feature_layout, feature_size, featurize, featurize_batch, murmur3, text_features
from .records import TopicCatalog

__all__ = [
    "AnnouncedVersions",
    "Checkpoint",
    "CommitResult",
    "Consumed",
    "FeatureConfig",
    "FlywheelDataset",
    "ReplayBuffer",
    "ReplayConfig",
    "StalenessConfig",
    "StarvationConfig",
    "StarvationMonitor",
    "TopicCatalog",
    "TopicPartitionOffset",
    "TrainerClient",
    "TrainingBatch",
    "admit_by_staleness",
    "feature_layout",
    "feature_size",
    "featurize",
    "featurize_batch",
    "murmur3",
    "read_checkpoint",
    "text_features",
    "write_checkpoint",
]


def __getattr__(name: str):
    if name == "FlywheelDataset":
        from .dataset import FlywheelDataset

        return FlywheelDataset
    raise AttributeError(name)
