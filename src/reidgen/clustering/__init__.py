"""Pseudo labels for unlabelled training data (DomainMix, GCL): k-reciprocal Jaccard distance,
DBSCAN and the reliability criteria; no Lightning and no data module in here (issue 15)."""
