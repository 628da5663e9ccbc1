import sys

from optlab.experiments.cli import main

sys.exit(main())
