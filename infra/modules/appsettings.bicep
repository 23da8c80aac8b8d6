// The function app's app settings (main.bicep composes them), applied once the app's identity
// holds its storage, Event Hubs and Key Vault roles (main.bicep's dependsOn), so the host never
// starts with settings it cannot use yet.
param functionAppName string
@description('Every app setting (main.bicep composes them).')
param appSettings object

resource site 'Microsoft.Web/sites@2024-04-01' existing = {
  name: functionAppName
}

resource settings 'Microsoft.Web/sites/config@2024-04-01' = {
  //checkov:skip=CKV_AZURE_63:this resource is the appsettings list, not the web server config the check reads; Flex Consumption has no IIS HTTP logs, requests, traces and host logs go to Application Insights (workspace-based, Entra auth)
  //checkov:skip=CKV_AZURE_65:this resource is the appsettings list, not the web server config the check reads; detailed IIS error pages do not exist on Flex Consumption, errors are in Application Insights
  //checkov:skip=CKV_AZURE_66:this resource is the appsettings list, not the web server config the check reads; IIS failed-request tracing does not exist on Flex Consumption, failures are in Application Insights
  //checkov:skip=CKV_AZURE_80:this resource is the appsettings list, not the web server config the check reads; the app is Python 3.11, no .NET Framework
  //checkov:skip=CKV_AZURE_88:this resource is the appsettings list, not the web server config the check reads; Flex Consumption runs the package from blob storage and has no Azure Files content share
  //checkov:skip=CKV_AZURE_13:this resource is the appsettings list, not the web server config the check reads; App Service Authentication is on, configured in the authsettingsV2 resource of functionapp.bicep
  //checkov:skip=CKV_AZURE_222:this resource is the appsettings list, not the web server config the check reads; the alert intake and operator endpoints must be reachable and App Service Authentication requires an Entra ID token on every route. Private endpoints need VNet integration, which this template does not deploy
  parent: site
  name: 'appsettings'
  properties: appSettings
}
