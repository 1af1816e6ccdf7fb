import sys

from dodai.cli import main

sys.exit(main())
