import sys

from shotstamp_service.cli import main

sys.exit(main())
