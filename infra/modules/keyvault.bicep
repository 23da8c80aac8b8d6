// Optional Key Vault (RBAC mode, purge protection) for secrets an operator may add later,
// read by the app through Key Vault references (@Microsoft.KeyVault(...) app settings,
// resolved with the app's system-assigned identity, the default for Key Vault references).
param name string
param location string
param tags object
@description('Managed identity that reads secrets (the function app).')
param readerPrincipalId string
param workspaceId string

var keyVaultSecretsUser = '4633458b-17de-408a-b874-0445c86b69e6'

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  //checkov:skip=CKV_AZURE_109:the non-VNet Flex Consumption app resolves Key Vault references over the public endpoint, which a deny firewall would block; access is RBAC-only (Key Vault Secrets User for the app identity)
  //checkov:skip=CKV_AZURE_189:same as CKV_AZURE_109: public network access is needed by the non-VNet app; every read needs an Entra token with Key Vault Secrets User
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: tenant().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    enablePurgeProtection: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

resource readerAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, readerPrincipalId, keyVaultSecretsUser)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsUser)
    principalId: readerPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource auditLogs 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: vault
  properties: {
    workspaceId: workspaceId
    logs: [
      {
        categoryGroup: 'audit'
        enabled: true
      }
    ]
  }
}

output uri string = vault.properties.vaultUri
