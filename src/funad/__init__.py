"""funad: fully unsupervised visual anomaly detection (FUN-AD)."""
