import sys

from fmappliance.installer.cli import main

sys.exit(main())
