"""Anomaly detectors following River's ``AnomalyDetector`` contract (higher score = more anomalous)."""
