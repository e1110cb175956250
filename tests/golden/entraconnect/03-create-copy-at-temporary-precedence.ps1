$ErrorActionPreference = 'Stop'
Import-Module ADSync
New-ADSyncRule `
    -Name 'In from AD - User Exchange' `
    -Identifier '0a344c64-9cce-51e1-9959-c8e62da721da' `
    -Description '' `
    -Direction 'Inbound' `
    -Precedence 212 `
    -PrecedenceAfter '00000000-0000-0000-0000-000000000000' `
    -PrecedenceBefore '00000000-0000-0000-0000-000000000000' `
    -SourceObjectType 'user' `
    -TargetObjectType 'person' `
    -Connector 'c61dd535-08eb-5056-93c7-f80fa13a1dbf' `
    -LinkType 'Join' `
    -SoftDeleteExpiryInterval 0 `
    -ImmutableTag '' `
    -OutVariable syncRule
Add-ADSyncAttributeFlowMapping `
    -SynchronizationRule $syncRule[0] `
    -Destination 'msExchMailboxGuid' `
    -FlowType 'Expression' `
    -ValueMergeType 'Update' `
    -ExecuteOnce `
    -Expression 'NULL' `
    -OutVariable syncRule
Add-ADSyncAttributeFlowMapping `
    -SynchronizationRule $syncRule[0] `
    -Source @('msExchUsageLocation') `
    -Destination 'usageLocation' `
    -FlowType 'Direct' `
    -ValueMergeType 'Update' `
    -OutVariable syncRule
Add-ADSyncAttributeFlowMapping `
    -SynchronizationRule $syncRule[0] `
    -Source @('mailNickname') `
    -Destination 'mailNickname' `
    -FlowType 'Direct' `
    -ValueMergeType 'Update' `
    -OutVariable syncRule
New-Object Microsoft.IdentityManagement.PowerShell.ObjectModel.ScopeCondition -ArgumentList 'mailNickname','','ISNOTNULL' -OutVariable condition0
Add-ADSyncScopeConditionGroup `
    -SynchronizationRule $syncRule[0] `
    -ScopeConditions @($condition0[0]) `
    -OutVariable syncRule
Add-ADSyncRule -SynchronizationRule $syncRule[0]
