// Event Hubs for the alert streams: one hub per stream trigger (Entra ID Protection
// diagnostics: RiskyUsers/UserRiskEvents; Defender XDR streaming: AlertInfo/AlertEvidence).
// The function app reads with its managed identity (Azure Event Hubs Data Receiver, below);
// the EVENTHUB__* app settings are identity-based. Microsoft Entra diagnostic settings can
// only deliver through a namespace SAS authorization rule, hence one dedicated rule
// (entra-diagnostics) and local auth left on; nothing else uses keys.
param name string
param location string
param tags object
param skuName string
@description('Hub names (the values of the triggers\' %..._EVENTHUB_NAME% settings).')
param hubNames array
@description('Managed identity that reads the hubs (the function app).')
param readerPrincipalId string

@minValue(1)
@maxValue(7)
param retentionDays int = 1
@minValue(1)
@maxValue(32)
param partitionCount int = 2

var eventHubsDataReceiver = 'a638d3c7-ab3a-418d-83e6-5f17a39d4fde'

resource namespace 'Microsoft.EventHub/namespaces@2024-01-01' = {
  name: name
  location: location
  tags: tags
  sku: {
    name: skuName
    tier: skuName
    capacity: 1
  }
  properties: {
    minimumTlsVersion: '1.2'
    publicNetworkAccess: 'Enabled'
    disableLocalAuth: false
  }
}

resource hubs 'Microsoft.EventHub/namespaces/eventhubs@2024-01-01' = [
  for hubName in hubNames: {
    parent: namespace
    name: hubName
    properties: {
      partitionCount: partitionCount
      messageRetentionInDays: retentionDays
    }
  }
]

// Used only by the Entra diagnostic setting the post-provision script creates (Azure Monitor
// requires Manage, Send and Listen on the rule it streams through).
resource diagnosticsRule 'Microsoft.EventHub/namespaces/authorizationRules@2024-01-01' = {
  parent: namespace
  name: 'entra-diagnostics'
  properties: {
    rights: [
      'Manage'
      'Listen'
      'Send'
    ]
  }
}

resource readerAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(namespace.id, readerPrincipalId, eventHubsDataReceiver)
  scope: namespace
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', eventHubsDataReceiver)
    principalId: readerPrincipalId
    principalType: 'ServicePrincipal'
  }
}

output id string = namespace.id
output diagnosticsRuleId string = diagnosticsRule.id
