"""Tenantry: multi-tenancy for Kubernetes, from one constitution.

Layers (enforced by import-linter, see `.importlinter`):
``cli`` -> ``reconcile`` -> ``kube`` -> ``render`` -> ``api``.
The renderer and the API models never do I/O.
"""

from typing import Final

__version__ = "0.1.0"
GROUP = "tenantry.dev"
VERSION = "v1alpha1"
API_VERSION: Final = "tenantry.dev/v1alpha1"  # f"{GROUP}/{VERSION}", spelt out for typing
