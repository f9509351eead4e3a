"""`python -m circuitsketch`: a shim for the command line, which lives on top in runtime.cli."""

from runtime.cli import main

raise SystemExit(main())
