import sys

from funad.cli import main

sys.exit(main())
