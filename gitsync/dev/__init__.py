"""Development tools, not product features: the Relay Server stand-in and the demo.

Nothing in the product imports this package (``tests/test_source.py`` checks it); the
command line reaches the demo and the stand-in only when asked to run them.
"""
