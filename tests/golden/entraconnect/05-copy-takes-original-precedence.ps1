$ErrorActionPreference = 'Stop'
Import-Module ADSync
$syncRule = Get-ADSyncRule -Identifier '0a344c64-9cce-51e1-9959-c8e62da721da'
$syncRule.Precedence = 108
Add-ADSyncRule -SynchronizationRule $syncRule
