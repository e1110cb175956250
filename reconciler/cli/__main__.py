import sys

from reconciler.cli.command import main

sys.exit(main())
