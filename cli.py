#!/usr/bin/env python3
"""``python cli.py ...`` in a checkout: the same commands as the installed ``relay-git-sync``.

The click group lives in :mod:`gitsync.cli`, so the command also works from an
installed package (``relay-git-sync``, ``python -m gitsync``).
"""

from gitsync.cli import cli, main

__all__ = ["cli", "main"]

if __name__ == "__main__":
    main()
