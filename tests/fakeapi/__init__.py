"""A fake Kubernetes API server for the tests and the bench: see server.py for what it models."""
