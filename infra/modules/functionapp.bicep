// The function app on the Flex Consumption plan (FC1, Linux, Python 3.11), running as the
// user-assigned managed identity: the deployment package is pulled from blob storage with it,
// the host's storage / Event Hubs connections and the app's Graph / Exchange tokens use it.
param name string
param planName string
param location string
param tags object
@description('Resource id of the user-assigned managed identity.')
param identityId string
@description('Blob container URL the deployment package is uploaded to.')
param deploymentContainerUrl string
param instanceMemoryMB int
param maximumInstanceCount int
@description('Every app setting (main.bicep composes them).')
param appSettings object

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  //checkov:skip=CKV_AZURE_225:Flex Consumption zone redundancy is offered in some regions only; all state is in zone/geo-redundant storage and work waits on queues, so a zone outage delays steps but loses none
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  //checkov:skip=CKV_AZURE_222:the alert intake (POST /api/incidents, called by Sentinel/Logic Apps) and the operator endpoints must be reachable; every route needs a function key. Private endpoints need VNet integration, which this template does not deploy
  //checkov:skip=CKV_AZURE_17:callers (Sentinel/Logic Apps, operators) authenticate with function keys over TLS 1.2; requiring client certificates would break them and adds no identity the keys lack
  //checkov:skip=CKV_AZURE_212:Flex Consumption scales per trigger from zero and queue messages wait for an instance; always-ready instances would add a fixed cost for no loss avoided
  //checkov:skip=CKV_AZURE_213:App Service health check is not available on the Flex Consumption plan; health is watched through Application Insights
  name: name
  location: location
  tags: union(tags, { 'azd-service-name': 'api' })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    publicNetworkAccess: 'Enabled'
    keyVaultReferenceIdentity: identityId
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: deploymentContainerUrl
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        instanceMemoryMB: instanceMemoryMB
        maximumInstanceCount: maximumInstanceCount
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
  }
}

resource settings 'Microsoft.Web/sites/config@2024-04-01' = {
  //checkov:skip=CKV_AZURE_63:this resource is the appsettings list, not the web server config the check reads; Flex Consumption has no IIS HTTP logs, requests, traces and host logs go to Application Insights (workspace-based, Entra auth)
  //checkov:skip=CKV_AZURE_65:this resource is the appsettings list, not the web server config the check reads; detailed IIS error pages do not exist on Flex Consumption, errors are in Application Insights
  //checkov:skip=CKV_AZURE_66:this resource is the appsettings list, not the web server config the check reads; IIS failed-request tracing does not exist on Flex Consumption, failures are in Application Insights
  //checkov:skip=CKV_AZURE_80:this resource is the appsettings list, not the web server config the check reads; the app is Python 3.11, no .NET Framework
  //checkov:skip=CKV_AZURE_88:this resource is the appsettings list, not the web server config the check reads; Flex Consumption runs the package from blob storage and has no Azure Files content share
  //checkov:skip=CKV_AZURE_13:this resource is the appsettings list, not the web server config the check reads; every route requires a function key and the callers are automation, not browsers, so App Service Authentication (Easy Auth) is not used
  //checkov:skip=CKV_AZURE_222:this resource is the appsettings list, not the web server config the check reads; the alert intake (POST /api/incidents, called by Sentinel/Logic Apps) and the operator endpoints must be reachable; every route needs a function key. Private endpoints need VNet integration, which this template does not deploy
  parent: site
  name: 'appsettings'
  properties: appSettings
}

// No FTP or basic-auth SCM publishing: azd deploys with Entra ID.
resource ftpPublishing 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmPublishing 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'scm'
  properties: {
    allow: false
  }
}

output name string = site.name
output url string = 'https://${site.properties.defaultHostName}'
