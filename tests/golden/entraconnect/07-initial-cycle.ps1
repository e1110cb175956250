$ErrorActionPreference = 'Stop'
Import-Module ADSync
$started = Get-Date -Format o
$watermarks = @(foreach ($connector in Get-ADSyncConnector) {
    $last = @(Get-ADSyncRunProfileResult -ConnectorId $connector.Identifier -NumberRequested 1)
    [pscustomobject]@{
        Connector = $connector.Name
        RunNumber = $last[0].RunNumber
    }
})
# A cycle the scheduler started meanwhile makes the start fail ("Connector: X is busy"):
# the answer says so, and the provider waits for that cycle and starts again.
$result = $null
$refused = $null
try {
    $result = Start-ADSyncSyncCycle -PolicyType Initial
} catch {
    $refused = $_.Exception.Message
}
[pscustomobject]@{
    Started = $started
    Watermarks = $watermarks
    Result = [string]$result.Result
    Refused = $refused
} | ConvertTo-Json -Depth 4 -Compress

# Then, every 10 s until every connector has reported a run of this cycle:
$ErrorActionPreference = 'Stop'
Import-Module ADSync
$connectors = @(Get-ADSyncConnector)
[pscustomobject]@{
    SyncCycleInProgress = (Get-ADSyncScheduler).SyncCycleInProgress
    RunStatus = @(foreach ($status in Get-ADSyncConnectorRunStatus) {
        [pscustomobject]@{
            Connector = $status.ConnectorName
            RunState = [string]$status.RunState
        }
    })
    Connectors = @(foreach ($connector in $connectors) {
        [pscustomobject]@{
            Name = $connector.Name
            Type = $connector.ConnectorTypeName
        }
    })
    Runs = @(foreach ($connector in $connectors) {
        foreach ($run in Get-ADSyncRunProfileResult -ConnectorId $connector.Identifier -NumberRequested 5) {
            [pscustomobject]@{
                Connector = $run.ConnectorName
                RunNumber = $run.RunNumber
                Profile = $run.RunProfileName
                Result = $run.Result
                StartDate = $run.StartDate
                EndDate = $run.EndDate
            }
        }
    })
} | ConvertTo-Json -Depth 4 -Compress
