import sys

from reusevos.cli import main

sys.exit(main())
