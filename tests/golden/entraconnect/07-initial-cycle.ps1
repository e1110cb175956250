$ErrorActionPreference = 'Stop'
$started = Get-Date -Format o
$null = Start-ADSyncSyncCycle -PolicyType Initial
[pscustomobject]@{ Started = $started } | ConvertTo-Json -Compress

# Then, every 10 s until every connector has reported a run of this cycle:
$ErrorActionPreference = 'Stop'
$connectors = @(Get-ADSyncConnector)
[pscustomobject]@{
    SyncCycleInProgress = (Get-ADSyncScheduler).SyncCycleInProgress
    Connectors = @(foreach ($connector in $connectors) { $connector.Name })
    Runs = @(foreach ($connector in $connectors) {
        foreach ($run in Get-ADSyncRunProfileResult -ConnectorId $connector.Identifier -NumberRequested 5) {
            [pscustomobject]@{
                Connector = $run.ConnectorName
                Profile = $run.RunProfileName
                Result = $run.Result
                StartDate = $run.StartDate
                EndDate = $run.EndDate
            }
        }
    })
} | ConvertTo-Json -Depth 4 -Compress
