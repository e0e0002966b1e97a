"""relay-git-sync: mirror Relay Server shared folders into Git repositories."""

import sys

__version__ = "0.1.0"

# Paramiko imports `invoke` (a task runner) for one OpenSSH config feature, `Match exec`,
# which runs a command. We read no OpenSSH config and never spawn processes, and the
# import is half of Paramiko's: keep it out (Paramiko then disables that feature).
sys.modules.setdefault("invoke", None)  # type: ignore[arg-type]
