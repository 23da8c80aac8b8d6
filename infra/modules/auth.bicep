// The responder's app registration: the audience of operator tokens and the app roles the app
// enforces (shared/principal.py), through the Microsoft Graph Bicep extension (bicepconfig.json)
// - declarative and idempotent like the Graph app-role grants in graph-app-roles.bicep, with
// role ids derived from the environment (stable across re-provisioning).
//   Incident.Submit   Sentinel, Logic Apps, scripts (users or managed identities): POST /api/incidents
//   Incident.Read     incident details (personal data), the storm breaker, Secure Score
//   Incident.Approve  approve / reject held incidents, reset the storm breaker
// v2.0 access tokens (requestedAccessTokenVersion 2): iss = login.microsoftonline.com/{tenant}/v2.0,
// aud = the client id; App Service Authentication (functionapp.bicep, authsettingsV2) validates them.
// Assignment is required: a user or application without a role assignment gets no token.
// The deploying user needs Application Administrator (or Cloud Application Administrator) to
// create the registration and Privileged Role Administrator for the optional operator assignment.
extension microsoftGraphV1

@description('Unique name of the registration in the tenant (idempotent re-deployments find it by this).')
param uniqueName string
param displayName string
@description('Seed for the app role ids (stable per environment).')
param roleIdSeed string
@description('Optional operator (user or group) who gets Incident.Read and Incident.Approve. Empty: nobody.')
param operatorPrincipalId string = ''
@description('Easy Auth\'s browser sign-in callback (https://<app>/.auth/login/aad/callback): the console signs operators in there.')
param signInRedirectUri string = ''

var appRoles = [
  {
    value: 'Incident.Submit'
    displayName: 'Submit incidents'
    description: 'Submit a compromised-user incident (POST /api/incidents): Sentinel, Logic Apps, scripts.'
    allowedMemberTypes: [
      'Application'
      'User'
    ]
  }
  {
    value: 'Incident.Read'
    displayName: 'Read incidents'
    description: 'Read incidents and their ledger (personal data), the storm breaker and Secure Score.'
    allowedMemberTypes: [
      'User'
    ]
  }
  {
    value: 'Incident.Approve'
    displayName: 'Approve incidents'
    description: 'Approve or reject held incidents and reset the storm breaker. Protected accounts need two approvers.'
    allowedMemberTypes: [
      'User'
    ]
  }
]
var operatorRoles = empty(operatorPrincipalId) ? [] : [
  'Incident.Read'
  'Incident.Approve'
]

resource app 'Microsoft.Graph/applications@v1.0' = {
  uniqueName: uniqueName
  displayName: displayName
  signInAudience: 'AzureADMyOrg'
  api: {
    requestedAccessTokenVersion: 2
  }
  // Browser sign-in for the console: App Service Authentication's /.auth/login/aad flow without a
  // client secret asks for an ID token (form_post) at this callback; the ID token carries the roles.
  web: empty(signInRedirectUri) ? null : {
    redirectUris: [
      signInRedirectUri
    ]
    implicitGrantSettings: {
      enableIdTokenIssuance: true
      enableAccessTokenIssuance: false
    }
  }
  appRoles: [
    for role in appRoles: {
      id: guid(roleIdSeed, role.value)
      value: role.value
      displayName: role.displayName
      description: role.description
      allowedMemberTypes: role.allowedMemberTypes
      isEnabled: true
    }
  ]
}

resource servicePrincipal 'Microsoft.Graph/servicePrincipals@v1.0' = {
  appId: app.appId
  appRoleAssignmentRequired: true
}

resource operatorAssignments 'Microsoft.Graph/appRoleAssignedTo@v1.0' = [
  for role in operatorRoles: {
    principalId: operatorPrincipalId
    resourceId: servicePrincipal.id
    appRoleId: guid(roleIdSeed, role)
  }
]

output clientId string = app.appId
output servicePrincipalId string = servicePrincipal.id
output roleIds object = toObject(appRoles, r => r.value, r => guid(roleIdSeed, r.value))
