"""`python -m genapp ...`: the command line of `genapp.cli`."""

import sys

from genapp.cli import main

sys.exit(main())
