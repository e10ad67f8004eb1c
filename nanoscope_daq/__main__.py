"""``python -m nanoscope_daq`` is the ``nanoscope`` command."""

from .cli import main

raise SystemExit(main())
