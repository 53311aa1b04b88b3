"""``python -m nestc`` (and ``torchrun -m nestc``) runs the CLI."""

from nestc.cli import main

main()
