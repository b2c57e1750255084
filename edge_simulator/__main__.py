import sys

from edge_simulator.cli import main

sys.exit(main())
