"""sdinfra roles: pyinfra packaged deploys, one folder per concern."""
