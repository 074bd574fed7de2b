import sys

from kernel.main import main

sys.exit(main())
