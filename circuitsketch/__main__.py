"""`python -m circuitsketch`: the same command line as the `circuitsketch` script."""

from circuitsketch.cli import main

raise SystemExit(main())
