// Microsoft Graph application permissions (app roles) for the function app's managed
// identity, through the Microsoft Graph Bicep extension (bicepconfig.json). main.bicep passes
// exactly the roles the enabled steps need (infra/generated/permissions.json, generated from
// each step's declared calls). The deploying user needs Privileged Role Administrator (or
// Global Administrator) for app role assignments on Microsoft Graph. Exchange.ManageAsApp and
// the directory roles are granted by infra/scripts/postprovision.py.
extension microsoftGraphV1

@description('Object id of the managed identity\'s service principal.')
param principalId string
@description('Graph app role values, e.g. User.Read.All.')
param appRoles array
@description('appId of Microsoft Graph.')
param graphAppId string

resource graph 'Microsoft.Graph/servicePrincipals@v1.0' existing = {
  appId: graphAppId
}

resource grants 'Microsoft.Graph/appRoleAssignedTo@v1.0' = [
  for appRole in appRoles: {
    principalId: principalId
    resourceId: graph.id
    appRoleId: filter(graph.appRoles, r => r.value == appRole)[0].id
  }
]

output granted array = appRoles
