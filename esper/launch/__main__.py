import sys

from esper.launch.main import main

sys.exit(main())
