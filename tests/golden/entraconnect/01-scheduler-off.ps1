$ErrorActionPreference = 'Stop'
Set-ADSyncScheduler -SyncCycleEnabled $false
