// Breach Responder on Azure: everything `azd provision` creates.
//
// Subscription scope: the resource group, then one module per concern inside it.
// App settings = infra/app-settings.json (every setting the code reads, with the defaults of
// local.settings.sample.json: adding a setting is one line there) + TENANT_ID from the
// deployment + azd overrides (main.parameters.json) + RESPONDER_MODE (validated parameter)
// + the platform settings computed here (identity-based storage / Event Hubs / App Insights).
// What the managed identity (system-assigned: functionapp.bicep says why no user-assigned one is
// needed) may do in Microsoft 365 comes from infra/generated/permissions.json (tools/gen_infra.py,
// from each step's declared calls): only what the enabled steps need. Operators and producers
// reach the app through App Service Authentication with the app roles of auth.bicep.
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('azd environment name: names the resource group and seeds the resource names.')
param environmentName string

@minLength(1)
@description('Azure region; it must offer the Flex Consumption plan.')
@metadata({ azd: { type: 'location' } })
param location string

@allowed([
  'approval'
  'auto'
  'dry-run'
])
@description('RESPONDER_MODE. approval (default): every incident waits for an operator before any change; auto: remediate at once; dry-run: record what would be done.')
param responderMode string = 'approval'

@description('App settings to override, by name (keys of infra/app-settings.json). Empty values are ignored, so unset azd variables keep the defaults.')
param appSettingOverrides object = {}

@description('Deploy the Event Hubs namespace with one hub per stream trigger (Entra ID Protection diagnostics, Defender XDR streaming) and turn those triggers on.')
param enableStreams bool = false

@allowed([
  'Standard'
  'Premium'
])
@description('Event Hubs namespace tier (streams on only).')
param eventHubSku string = 'Standard'

@description('Deploy a Key Vault (RBAC mode) the app can read secrets from through Key Vault references. The app needs no secret by default.')
param enableKeyVault bool = false

@allowed([
  'bicep'
  'script'
])
@description('Who grants the Microsoft Graph app roles: this template (Microsoft Graph Bicep extension), or the post-provision script (when the deploying identity may not use the extension).')
param graphRolesVia string = 'bicep'

@allowed([
  'user-administrator'
  'privileged-authentication-administrator'
])
@description('Directory role for password resets: User Administrator covers non-admin users (admins are held for approval); Privileged Authentication Administrator covers everyone.')
param passwordResetRole string = 'user-administrator'

@description('Optional object id of an operator (user or group) who runs the responder CLI against this deployment: gets the Incident.Read and Incident.Approve app roles (decisions go through the API) and queue and table data access (status, inject, poison). Empty: nobody.')
param operatorPrincipalId string = ''

@allowed([
  'User'
  'Group'
  'ServicePrincipal'
])
param operatorPrincipalType string = 'User'

@allowed([
  'role-group'
  'directory-role'
])
@description('How the app may run its Exchange Online cmdlets: a custom role group holding only those cmdlets (the post-provision step builds it in Exchange Online PowerShell), or the tenant-wide Exchange Administrator directory role (the fallback when PowerShell 7 with ExchangeOnlineManagement is not available).')
param exchangePermissions string = 'role-group'

@allowed([
  'exchange-rbac'
  'unscoped'
])
@description('Mail.Send: exchange-rbac (default) = RBAC for Applications "Application Mail.Send" scoped to NOTIFY_SENDER by the post-provision step, and no tenant-wide Entra grant; unscoped = the Entra Mail.Send app role (any mailbox).')
param mailSendScope string = 'exchange-rbac'

@description('Put the Defender XDR hub in the Entra export namespace (local auth on) too: only if the Defender portal cannot stream into a namespace without SAS.')
param defenderStreamLocalAuth bool = false

@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_GZRS'
  'Standard_RAGRS'
  'Standard_RAGZRS'
])
@description('Storage redundancy. The ledger is the record of what was done to each account: geo-redundant by default.')
param storageSku string = 'Standard_GZRS'

@allowed([
  2048
  4096
])
@description('Flex Consumption instance memory (MB).')
param instanceMemoryMB int = 2048

@minValue(40)
@maxValue(1000)
@description('Flex Consumption scale-out limit; a low one also limits how hard an alert storm can hit Graph.')
param maximumInstanceCount int = 40

// -- names ------------------------------------------------------------------------------

var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
  application: 'breach-responder'
}
var functionAppName = 'func-${resourceToken}'
var storageAccountName = 'st${resourceToken}'
var eventHubNamespaceName = 'evhns-${resourceToken}'
var entraExportNamespaceName = 'evhns-entra-${resourceToken}'
var deploymentContainerName = 'app-package-${resourceToken}'

// -- app settings -----------------------------------------------------------------------

var appSettingDefaults = loadJsonContent('app-settings.json')
var appSettingsGiven = toObject(
  filter(items(appSettingOverrides), kv => !empty(string(kv.value))),
  kv => kv.key,
  kv => string(kv.value)
)
// The app's own settings (all known when the deployment starts).
var appSettings = union(appSettingDefaults, { TENANT_ID: tenant().tenantId }, appSettingsGiven, { RESPONDER_MODE: responderMode })
// KEY_ONLY_INTAKE=true: the key-intake route is excluded from App Service Authentication (a
// function key alone then submits); off by default.
var keyOnlyIntake = toLower(trim(appSettings.KEY_ONLY_INTAKE)) == 'true'
var keyIntakePath = '/api/key-intake'
// The console's sign-in page and its CSS/JS hold no data: reachable without a session, so a browser
// that has none gets a page with the sign-in link instead of Easy Auth's bare 401 (Return401 stays
// the rule for everything else, the API's callers included).
var consoleExcludedPaths = [
  '/api/console/signin'
  '/api/console/static'
]

// -- what the code declares (tools/gen_infra.py) -----------------------------------------

var bindings = loadJsonContent('generated/bindings.json')
var permissions = loadJsonContent('generated/permissions.json')

// A permission is needed when one of its uses is: a step in PLAYBOOK_STEPS (or an always-on
// component) and, for calls made in one mode only, the setting has that value ("*" = always).
// RECOVERY=tap adds the recovery-pass step when PLAYBOOK_STEPS does not name it (shared/settings.py
// effective_playbook does the same at run time).
var listedSteps = map(split(appSettings.PLAYBOOK_STEPS, ','), s => trim(s))
var enabledSteps = toLower(trim(appSettings.RECOVERY)) == 'tap' ? union(listedSteps, ['recovery-pass']) : listedSteps
var conditionValues = union(appSettings, { '*': '*' })
var graphNeeded = filter(permissions.graph, p => !empty(filter(p.uses, u => (u.kind == 'component' || contains(enabledSteps, u.by)) && contains(u.whenValues, toLower(trim(conditionValues[u.whenSetting]))))))
// Mail.Send scoped by Exchange RBAC for Applications is granted there (post-provision), never
// tenant-wide in Entra (permissions.json marks it exchangeRbac).
var exchangeScopedNeeded = filter(graphNeeded, p => p.exchangeRbac)
var mailSendScoped = mailSendScope == 'exchange-rbac' && !empty(exchangeScopedNeeded)
var graphAppRoles = map(filter(graphNeeded, p => !(p.exchangeRbac && mailSendScoped)), p => p.permission)
var exchangeNeeded = filter(permissions.exchange, p => !empty(filter(p.uses, u => (u.kind == 'component' || contains(enabledSteps, u.by)) && contains(u.whenValues, toLower(trim(conditionValues[u.whenSetting]))))))
var exchangeAppRoles = map(exchangeNeeded, p => p.permission)
var rolesNeeded = filter(permissions.directoryRoles, r => !empty(filter(r.uses, u => (u.kind == 'component' || contains(enabledSteps, u.by)) && contains(u.whenValues, toLower(trim(conditionValues[u.whenSetting]))))))
var roleNamesNeeded = map(rolesNeeded, r => r.role)
var passwordResetRoleName = passwordResetRole == 'privileged-authentication-administrator' ? 'Privileged Authentication Administrator' : 'User Administrator'
// With exchangePermissions=role-group the Exchange cmdlets run under a custom Exchange role group
// (post-provision), so no Exchange-related directory role is assigned.
var directoryRoles = map(
  filter(rolesNeeded, r => (empty(r.supersededBy) || !contains(roleNamesNeeded, r.supersededBy)) && (exchangePermissions == 'directory-role' || !r.exchange)),
  r => r.role == permissions.passwordResetRolePlaceholder ? passwordResetRoleName : r.role
)
var exchangeCmdletsNeeded = map(filter(permissions.exchangeCmdlets, c => !empty(filter(c.uses, u => (u.kind == 'component' || contains(enabledSteps, u.by))))), c => c.cmdlet)

// Queues (each with the host's -poison queue), tables and Event Hubs the functions bind to.
var queueBaseNames = concat(bindings.queueNames, map(bindings.queueNameSettings, s => appSettings[s]))
var queueNames = flatten(map(queueBaseNames, q => [
  q
  '${q}-poison'
]))
var eventHubNames = map(bindings.eventHubTriggers, t => appSettings[t.hubSetting])
// The Entra export hub (Azure Monitor delivers only through SAS) gets a namespace of its own with
// local auth on; every other stream hub lives in a namespace with local auth off.
var exportTriggers = filter(bindings.eventHubTriggers, t => t.hubSetting == 'ENTRA_EVENTHUB_NAME' || defenderStreamLocalAuth)
var lockedTriggers = filter(bindings.eventHubTriggers, t => !(t.hubSetting == 'ENTRA_EVENTHUB_NAME' || defenderStreamLocalAuth))
var exportHubNames = map(exportTriggers, t => appSettings[t.hubSetting])
var lockedHubNames = map(lockedTriggers, t => appSettings[t.hubSetting])
var streamFunctionsOff = toObject(bindings.eventHubFunctions, f => 'AzureWebJobs.${f}.Disabled', f => 'true')

// -- resources --------------------------------------------------------------------------

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: 'rg-${environmentName}'
  location: location
  tags: tags
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    workspaceName: 'log-${resourceToken}'
    appInsightsName: 'appi-${resourceToken}'
    location: location
    tags: tags
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: storageAccountName
    location: location
    tags: tags
    skuName: storageSku
    deploymentContainerName: deploymentContainerName
    queueNames: queueNames
    tableNames: bindings.tables
    workspaceId: monitoring.outputs.workspaceId
  }
}

module auth 'modules/auth.bicep' = {
  name: 'auth'
  scope: rg
  params: {
    uniqueName: 'breach-responder-${resourceToken}'
    displayName: 'Breach Responder (${environmentName})'
    roleIdSeed: resourceToken
    operatorPrincipalId: operatorPrincipalId
    // Browser sign-in (the console): Easy Auth's callback on the app's default host name.
    signInRedirectUri: 'https://${functionAppName}.azurewebsites.net/.auth/login/aad/callback'
  }
}

module functionApp 'modules/functionapp.bicep' = {
  name: 'functionapp'
  scope: rg
  params: {
    name: functionAppName
    planName: 'plan-${resourceToken}'
    location: location
    tags: tags
    deploymentContainerUrl: '${storage.outputs.blobEndpoint}${deploymentContainerName}'
    instanceMemoryMB: instanceMemoryMB
    maximumInstanceCount: maximumInstanceCount
    authClientId: auth.outputs.clientId
    authExcludedPaths: concat(consoleExcludedPaths, keyOnlyIntake ? [
      keyIntakePath
    ] : [])
  }
}

module eventHubs 'modules/eventhubs.bicep' = if (enableStreams && !empty(lockedHubNames)) {
  name: 'eventhubs'
  scope: rg
  params: {
    name: eventHubNamespaceName
    location: location
    tags: tags
    skuName: eventHubSku
    hubNames: lockedHubNames
    readerPrincipalId: functionApp.outputs.principalId
    localAuthForExport: false
  }
}

module entraExport 'modules/eventhubs.bicep' = if (enableStreams && !empty(exportHubNames)) {
  name: 'eventhubs-entra-export'
  scope: rg
  params: {
    name: entraExportNamespaceName
    location: location
    tags: tags
    skuName: eventHubSku
    hubNames: exportHubNames
    readerPrincipalId: functionApp.outputs.principalId
    localAuthForExport: true
  }
}

module keyVault 'modules/keyvault.bicep' = if (enableKeyVault) {
  name: 'keyvault'
  scope: rg
  params: {
    name: 'kv-${resourceToken}'
    location: location
    tags: tags
    readerPrincipalId: functionApp.outputs.principalId
    workspaceId: monitoring.outputs.workspaceId
  }
}

module rbac 'modules/rbac.bicep' = {
  name: 'rbac'
  scope: rg
  params: {
    principalId: functionApp.outputs.principalId
    storageAccountName: storage.outputs.name
    appInsightsName: monitoring.outputs.appInsightsName
    operatorPrincipalId: operatorPrincipalId
    operatorPrincipalType: operatorPrincipalType
  }
}

// Identity-based connections only (the system-assigned identity): no key or connection string anywhere.
var platformSettings = {
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__blobServiceUri: storage.outputs.blobEndpoint
  AzureWebJobsStorage__queueServiceUri: storage.outputs.queueEndpoint
  AzureWebJobsStorage__tableServiceUri: storage.outputs.tableEndpoint
  APPLICATIONINSIGHTS_CONNECTION_STRING: monitoring.outputs.connectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'Authorization=AAD'
  // App Service Authentication: only tokens of this tenant.
  WEBSITE_AUTH_AAD_ALLOWED_TENANTS: tenant().tenantId
}
var streamConnectionSettings = union(
  toObject(exportTriggers, t => '${t.connection}__fullyQualifiedNamespace', t => '${entraExportNamespaceName}.servicebus.windows.net'),
  toObject(lockedTriggers, t => '${t.connection}__fullyQualifiedNamespace', t => '${eventHubNamespaceName}.servicebus.windows.net')
)
// Streams off: no namespace, so the Event Hub triggers are disabled instead of failing.
var streamSettings = enableStreams ? streamConnectionSettings : streamFunctionsOff

module functionAppSettings 'modules/appsettings.bicep' = {
  name: 'functionapp-settings'
  scope: rg
  params: {
    functionAppName: functionApp.outputs.name
    appSettings: union(appSettings, platformSettings, streamSettings)
  }
  // The identity must hold its roles (storage, Event Hubs, Key Vault) before the host starts.
  dependsOn: [
    rbac
    eventHubs
    entraExport
    keyVault
  ]
}

module graphRoles 'modules/graph-app-roles.bicep' = if (graphRolesVia == 'bicep') {
  name: 'graph-app-roles'
  scope: rg
  params: {
    principalId: functionApp.outputs.principalId
    appRoles: graphAppRoles
    graphAppId: permissions.graphAppId
  }
}

// -- outputs (azd stores them in the environment; the post-provision script reads them) --

output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output FUNCTION_APP_NAME string = functionApp.outputs.name
output FUNCTION_APP_URL string = functionApp.outputs.url
output RESPONDER_MODE string = appSettings.RESPONDER_MODE
output PLAYBOOK_STEPS string = appSettings.PLAYBOOK_STEPS
output MFA_MODE string = appSettings.MFA_MODE
output RESPONDER_IDENTITY_PRINCIPAL_ID string = functionApp.outputs.principalId
output RESPONDER_API_CLIENT_ID string = auth.outputs.clientId
// For the responder CLI (`responder approve|reject|storm` sign in with the Azure CLI for this scope).
output RESPONDER_API_URL string = functionApp.outputs.url
output RESPONDER_API_SCOPE string = '${auth.outputs.clientId}/.default'
output KEY_ONLY_INTAKE bool = keyOnlyIntake
output RESPONDER_GRAPH_APP_ID string = permissions.graphAppId
output RESPONDER_GRAPH_APP_ROLES string = join(graphAppRoles, ',')
output RESPONDER_GRAPH_ROLES_VIA string = graphRolesVia
output RESPONDER_EXCHANGE_APP_ID string = permissions.exchangeAppId
output RESPONDER_EXCHANGE_APP_ROLES string = join(exchangeAppRoles, ',')
output RESPONDER_DIRECTORY_ROLES string = join(directoryRoles, ',')
output RESPONDER_EXCHANGE_PERMISSIONS string = exchangePermissions
output RESPONDER_EXCHANGE_CMDLETS string = join(exchangeCmdletsNeeded, ',')
output RESPONDER_MAIL_SEND_SCOPE string = mailSendScoped ? 'exchange-rbac' : (empty(exchangeScopedNeeded) ? 'none' : 'unscoped')
output NOTIFY_SENDER string = appSettings.NOTIFY_SENDER
output STREAMS_ENABLED bool = enableStreams
output EVENTHUB_NAMESPACE string = enableStreams && !empty(lockedHubNames) ? eventHubNamespaceName : ''
output ENTRA_EXPORT_NAMESPACE string = enableStreams && !empty(exportHubNames) ? entraExportNamespaceName : ''
// The namespace the Defender XDR portal streams into (its resource id is asked for there).
output EVENTHUB_NAMESPACE_ID string = enableStreams ? (defenderStreamLocalAuth ? entraExport.outputs.id : eventHubs.outputs.id) : ''
output ENTRA_DIAGNOSTICS_AUTH_RULE_ID string = enableStreams && !empty(exportHubNames) ? entraExport.outputs.diagnosticsRuleId : ''
output ENTRA_EVENTHUB_NAME string = appSettings.ENTRA_EVENTHUB_NAME
output DEFENDER_EVENTHUB_NAME string = appSettings.DEFENDER_EVENTHUB_NAME
output KEY_VAULT_URI string = enableKeyVault ? keyVault.outputs.uri : ''
// For the responder CLI against this deployment (identity-based, like the app).
output AzureWebJobsStorage__queueServiceUri string = storage.outputs.queueEndpoint
output AzureWebJobsStorage__tableServiceUri string = storage.outputs.tableEndpoint
