import sys

from bundler.cli.main import main

sys.exit(main())
