"""``python -m lad.deploy``: export a run's model (see :mod:`lad.deploy.export`)."""

import sys

from lad.deploy.export import main

sys.exit(main())
