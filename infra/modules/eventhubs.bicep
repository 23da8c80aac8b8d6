// One Event Hubs namespace for alert streams, with one hub per stream trigger routed to it.
// main.bicep deploys it twice when streams are on:
// - the streams namespace (local auth OFF): the Defender XDR streaming hub. Nothing can use a
//   key here; the app reads with its identity;
// - the Entra export namespace (local auth ON): only the Entra ID Protection hub, because
//   Azure Monitor diagnostic settings (how Entra exports RiskyUsers/UserRiskEvents) deliver
//   through a namespace SAS authorization rule and cannot use Entra ID auth
//   (MicrosoftDocs/azure-docs#119932). Its one rule (entra-diagnostics) is what the Entra
//   diagnostic setting streams through; the namespace holds nothing else.
// The app's identity is Azure Event Hubs Data Receiver on each hub (not the namespace).
param name string
param location string
param tags object
param skuName string
@description('Hub names (the values of the triggers\' %..._EVENTHUB_NAME% settings) this namespace holds.')
param hubNames array
@description('Managed identity that reads the hubs (the function app).')
param readerPrincipalId string
@description('Keep SAS (local) auth for an exporter that cannot use Entra ID (Azure Monitor diagnostic settings).')
param localAuthForExport bool = false

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
    disableLocalAuth: !localAuthForExport
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
resource diagnosticsRule 'Microsoft.EventHub/namespaces/authorizationRules@2024-01-01' = if (localAuthForExport) {
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

resource readerAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for (hubName, i) in hubNames: {
    name: guid(hubs[i].id, readerPrincipalId, eventHubsDataReceiver)
    scope: hubs[i]
    properties: {
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', eventHubsDataReceiver)
      principalId: readerPrincipalId
      principalType: 'ServicePrincipal'
    }
  }
]

output id string = namespace.id
output name string = namespace.name
output diagnosticsRuleId string = localAuthForExport ? diagnosticsRule.id : ''
