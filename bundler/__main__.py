import os
import sys

from bundler.cli.main import main

code = main()
if code == 130:
    # Interrupted, and every cleanup done on the way out of main(). Run as `python -m bundler`,
    # CPython may still end the process with SIGINT instead of 130 after an interrupt that landed
    # while a module was being imported (seen about once in ten interrupted builds while
    # TensorFlow imported): nothing is left to finalise that matters, so exit with the code.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
sys.exit(code)
