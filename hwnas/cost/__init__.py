"""Cheap costs of a candidate, computed before any accuracy is spent: latency, FLOPs, parameters."""
