import sys

from ecgbridge.cli import main

sys.exit(main())
