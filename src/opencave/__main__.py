import sys

from opencave.cli import main

sys.exit(main())
