$ErrorActionPreference = 'Stop'
Set-ADSyncScheduler -SyncCycleEnabled $true
