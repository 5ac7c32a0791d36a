"""One module per ``radapt`` subcommand; each has ``register(subparsers)``."""
