"""python -m approx_dropout: the approx-dropout command."""
import sys

from .cli import main

sys.exit(main())
