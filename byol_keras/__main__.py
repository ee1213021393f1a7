import sys

from byol_keras.cli import main

sys.exit(main())
