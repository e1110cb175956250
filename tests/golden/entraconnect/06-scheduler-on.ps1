$ErrorActionPreference = 'Stop'
Import-Module ADSync
Set-ADSyncScheduler -SyncCycleEnabled $true
