"""`python -m kid.data.synth ...` is `python -m kid.synth ...` (CONTRACT 2)."""

import sys

from kid.synth.__main__ import main

if __name__ == "__main__":
    sys.exit(main())
