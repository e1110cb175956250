$ErrorActionPreference = 'Stop'
Import-Module ADSync
$syncRule = Get-ADSyncRule -Identifier 'dd849ff5-1608-53d6-ad94-50fda28cdd49'
$syncRule.Disabled = $true
Add-ADSyncRule -SynchronizationRule $syncRule
