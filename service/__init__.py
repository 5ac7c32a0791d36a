"""R-Adapt Serve: the HTTP service, its engine and the ``radapt`` command line."""
