// Azure RBAC for the function app's managed identity on the storage account and Application
// Insights (Event Hubs and Key Vault assign theirs in their own modules), and optionally for
// an operator running the responder CLI (status, inject, poison read tables and queues; approvals
// go through the app's API with the app roles of auth.bicep). Names are guid(scope, principal,
// role): stable, so re-provisioning never duplicates an assignment.
param principalId string
param storageAccountName string
param appInsightsName string
@description('Optional operator (user or group) object id for the responder CLI; empty: none.')
param operatorPrincipalId string = ''
param operatorPrincipalType string = 'User'

var role = {
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  storageQueueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  storageTableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
}

// Blob Data Owner: the Functions host (locks, timer and Event Hubs checkpoints) and the Flex
// Consumption deployment package container; Queue/Table Data Contributor: triggers, the app's
// queues and its ledger.
var appStorageRoles = [
  role.storageBlobDataOwner
  role.storageQueueDataContributor
  role.storageTableDataContributor
]
// The responder CLI reads and writes incidents (tables) and queues steps; no blob access.
var operatorStorageRoles = empty(operatorPrincipalId) ? [] : [
  role.storageQueueDataContributor
  role.storageTableDataContributor
]

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

resource appStorageAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for roleId in appStorageRoles: {
    name: guid(storage.id, principalId, roleId)
    scope: storage
    properties: {
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleId)
      principalId: principalId
      principalType: 'ServicePrincipal'
    }
  }
]

resource telemetryAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appInsights.id, principalId, role.monitoringMetricsPublisher)
  scope: appInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', role.monitoringMetricsPublisher)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

resource operatorStorageAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for roleId in operatorStorageRoles: {
    name: guid(storage.id, operatorPrincipalId, roleId)
    scope: storage
    properties: {
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleId)
      principalId: operatorPrincipalId
      principalType: operatorPrincipalType
    }
  }
]
