"""Entry points: the `mussikon` command line and the demo, on top of bootstrap."""
