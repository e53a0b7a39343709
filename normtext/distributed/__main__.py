"""``python -m normtext.distributed``: run ``module:function`` in k local processes."""
import sys

from .launch import main

sys.exit(main())
