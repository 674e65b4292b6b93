"""``python -m funad``: the ``funad`` command, as ``torchrun -m funad fit ...`` starts it in each process."""

import sys

from funad.cli import main

sys.exit(main())
