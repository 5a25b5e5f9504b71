"""aecli: train, use and evaluate image autoencoders from the command line.

Importing this package is cheap (no torch): the CLI's ``--help`` depends on it.
"""

__version__ = "0.1.0"
