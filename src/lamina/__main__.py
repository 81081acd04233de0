"""``python -m lamina`` (and ``torchrun -m lamina``): the ``lamina`` command."""

import sys

from lamina.cli.main import main

sys.exit(main())
