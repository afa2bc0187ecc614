"""``python -m runner.sim.metadata --host 0.0.0.0 --port 8080 --cloud aws``."""

from runner.sim.metadata.cli import main

raise SystemExit(main())
