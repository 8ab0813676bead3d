"""``python -m daskgd.cli``: the ``daskgd`` command."""

from daskgd.cli.main import main

raise SystemExit(main())
