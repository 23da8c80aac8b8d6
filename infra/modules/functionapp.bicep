// The function app on the Flex Consumption plan (FC1, Linux, Python 3.11), with its
// system-assigned managed identity: the deployment package is pulled from blob storage with it,
// the host's storage / Event Hubs connections and the app's Graph / Exchange tokens use it.
// A user-assigned identity is not needed: every grant is made after the site exists (rbac.bicep,
// graph-app-roles.bicep, the post-provision script) and re-made idempotently on every provision,
// so re-creating the site (a new identity) re-grants everything.
//
// App Service Authentication (Easy Auth, authsettingsV2) with Entra ID fronts every route: a
// request without a valid v2.0 token for the responder's app registration gets 401 before the
// app sees it; a valid one reaches the app with X-MS-CLIENT-PRINCIPAL, and the app enforces the
// app roles (Easy Auth does not). The app settings are a separate module (appsettings.bicep),
// deployed once the identity holds its roles.
param name string
param planName string
param location string
param tags object
@description('Blob container URL the deployment package is uploaded to.')
param deploymentContainerUrl string
param instanceMemoryMB int
param maximumInstanceCount int
@description('Client id of the responder\'s app registration (auth.bicep): the audience of operator tokens.')
param authClientId string
@description('Paths Easy Auth lets through without a token (the key-only intake route when KEY_ONLY_INTAKE=true).')
param authExcludedPaths array = []

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
  //checkov:skip=CKV_AZURE_222:the alert intake (POST /api/incidents, called by Sentinel/Logic Apps) and the operator endpoints must be reachable; App Service Authentication requires an Entra ID token on every route. Private endpoints need VNet integration, which this template does not deploy
  //checkov:skip=CKV_AZURE_17:callers (Sentinel/Logic Apps, operators) authenticate with Entra ID tokens (App Service Authentication, authsettingsV2) over TLS 1.2; client certificates would add no identity the tokens lack
  //checkov:skip=CKV_AZURE_212:Flex Consumption scales per trigger from zero and queue messages wait for an instance; always-ready instances would add a fixed cost for no loss avoided
  //checkov:skip=CKV_AZURE_213:App Service health check is not available on the Flex Consumption plan; health is watched through Application Insights
  name: name
  location: location
  tags: union(tags, { 'azd-service-name': 'api' })
  kind: 'functionapp,linux'
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    publicNetworkAccess: 'Enabled'
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
            type: 'SystemAssignedIdentity'
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

// App Service Authentication: Entra ID, every request needs a token (401 otherwise, the choice
// for APIs), v2.0 issuer of this tenant, audience = the responder's app registration. No
// allowedApplications list: any client the tenant issues a token to (it must hold an app role
// assignment: assignment is required) may call; the app checks the role.
resource auth 'Microsoft.Web/sites/config@2024-04-01' = {
  //checkov:skip=CKV_AZURE_13:this resource IS App Service Authentication (authsettingsV2: Entra ID, requireAuthentication, Return401); checkov reads the legacy authSettings shape of the web config
  //checkov:skip=CKV_AZURE_63:this resource is the authsettingsV2 config, not the web server config the check reads; Flex Consumption has no IIS HTTP logs, requests go to Application Insights
  //checkov:skip=CKV_AZURE_65:this resource is the authsettingsV2 config, not the web server config the check reads; detailed IIS error pages do not exist on Flex Consumption
  //checkov:skip=CKV_AZURE_66:this resource is the authsettingsV2 config, not the web server config the check reads; IIS failed-request tracing does not exist on Flex Consumption
  //checkov:skip=CKV_AZURE_80:this resource is the authsettingsV2 config, not the web server config the check reads; the app is Python 3.11, no .NET Framework
  //checkov:skip=CKV_AZURE_88:this resource is the authsettingsV2 config, not the web server config the check reads; Flex Consumption runs the package from blob storage and has no Azure Files content share
  //checkov:skip=CKV_AZURE_222:this resource is the authsettingsV2 config, not the web server config the check reads; the endpoints must be reachable by Sentinel/Logic Apps and operators, and this resource makes every route require an Entra ID token
  parent: site
  name: 'authsettingsV2'
  properties: {
    platform: {
      enabled: true
    }
    globalValidation: {
      requireAuthentication: true
      unauthenticatedClientAction: 'Return401'
      excludedPaths: authExcludedPaths
    }
    httpSettings: {
      requireHttps: true
    }
    identityProviders: {
      azureActiveDirectory: {
        enabled: true
        registration: {
          clientId: authClientId
          openIdIssuer: '${environment().authentication.loginEndpoint}${tenant().tenantId}/v2.0'
        }
        validation: {
          allowedAudiences: [
            authClientId
            'api://${authClientId}'
          ]
          defaultAuthorizationPolicy: {
            allowedApplications: []
          }
        }
      }
    }
    login: {
      tokenStore: {
        enabled: false
      }
    }
  }
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
output principalId string = site.identity.principalId
