"""nbferry.migrator: the `nbferry` command line and, later, the migrator service."""
