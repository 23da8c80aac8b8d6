"""The one credential a worker uses for Graph and Exchange Online.

In Azure this is the function app's managed identity (user-assigned: AZURE_CLIENT_ID);
locally the same ManagedIdentityCredential flow talks to the tenant simulator's token
endpoint through IDENTITY_ENDPOINT / IDENTITY_HEADER. Tokens are cached in memory by
azure-identity and never written to disk or logged.
"""
from __future__ import annotations

import logging

from azure.identity.aio import DefaultAzureCredential

logger = logging.getLogger(__name__)

GRAPH_SCOPE = "https://graph.microsoft.com/.default"
EXO_SCOPE = "https://outlook.office365.com/.default"


def build_credential() -> DefaultAzureCredential:
    """DefaultAzureCredential without the interactive / developer-tool fallbacks a worker never has."""
    return DefaultAzureCredential(
        exclude_interactive_browser_credential=True,
        exclude_visual_studio_code_credential=True,
        exclude_powershell_credential=True,
        exclude_developer_cli_credential=True,
        exclude_shared_token_cache_credential=True,
    )
