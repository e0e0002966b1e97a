"""relay-git-sync: mirror Relay Server shared folders into Git repositories."""

__version__ = "0.1.0"
