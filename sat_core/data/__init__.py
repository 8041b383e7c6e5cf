"""Data layer: records, the Karpathy splits, the Shapes world, datasets and batching."""
