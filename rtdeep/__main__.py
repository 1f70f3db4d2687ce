import sys

from rtdeep.cli import main

sys.exit(main())
