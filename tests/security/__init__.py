"""Security tests: credentials, isolation, hostile input."""
