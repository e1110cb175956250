$ErrorActionPreference = 'Stop'
Import-Module ADSync
Remove-ADSyncRule -Identifier 'dd849ff5-1608-53d6-ad94-50fda28cdd49'
