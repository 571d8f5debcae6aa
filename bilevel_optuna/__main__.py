import sys

from bilevel_optuna.cli import main

sys.exit(main())
