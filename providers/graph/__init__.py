"""The Microsoft 365 tenant through Microsoft Graph (msgraph-sdk).

Importing this package is cheap: msgraph, kiota and azure-identity load on the
first request a :class:`GraphTenant` makes (domain-facts E2).
"""

from providers.graph.tenant import GraphTenant, open_tenant

__all__ = ["GraphTenant", "open_tenant"]
