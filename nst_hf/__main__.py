import sys

from nst_hf.cli import main

sys.exit(main())
