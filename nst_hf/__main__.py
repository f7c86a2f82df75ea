import sys

from nst_hf.cli import main

if __name__ == "__main__":
    sys.exit(main())
