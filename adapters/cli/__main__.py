"""``python -m adapters.cli``: the ``scimledger`` command line."""

import sys

from adapters.cli.main import main

sys.exit(main())
