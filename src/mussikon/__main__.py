"""`python -m mussikon`: the same as the `mussikon` command."""

from mussikon.entrypoints.cli.app import main

main()
