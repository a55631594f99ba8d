"""Benchmarks: our figures beside the peers', measured in the same run (`mussikon bench …`)."""
