"""``python -m fluxnet.cli``: the ``fluxnet`` command."""
import sys

from fluxnet.cli import main

sys.exit(main())
