"""The ``radapt`` subcommands this package adds: ``radapt bench`` and ``radapt soak``.

``service.cli`` finds them by name through the ``radapt.commands`` entry points (pyproject.toml),
so the service never imports ``bench``; each module has ``register(subparsers)`` and ``run(args)``.
"""
