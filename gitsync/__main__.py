"""``python -m gitsync``: the ``relay-git-sync`` command."""

from .cli import main

main()
