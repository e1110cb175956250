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
Add-ADSyncAttributeFlowMapping `
    -SynchronizationRule $syncRule[0] `
    -Source @('msExchArchiveGUID') `
    -Destination 'msExchArchiveGUID' `
    -FlowType 'Direct' `
    -ValueMergeType 'Update' `
    -OutVariable syncRule
Add-ADSyncAttributeFlowMapping `
    -SynchronizationRule $syncRule[0] `
    -Source @('msExchArchiveName') `
    -Destination 'msExchArchiveName' `
    -FlowType 'Direct' `
    -ValueMergeType 'Update' `
    -OutVariable syncRule
Add-ADSyncAttributeFlowMapping `
    -SynchronizationRule $syncRule[0] `
    -Source @('msExchAssistantName') `
    -Destination 'msExchAssistantName' `
    -FlowType 'Direct' `
    -ValueMergeType 'Update' `
    -OutVariable syncRule
Add-ADSyncAttributeFlowMapping `
    -SynchronizationRule $syncRule[0] `
    -Source @('msExchAuditAdmin') `
    -Destination 'msExchAuditAdmin' `
    -FlowType 'Direct' `
    -ValueMergeType 'Update' `
    -OutVariable syncRule
Add-ADSyncAttributeFlowMapping `
    -SynchronizationRule $syncRule[0] `
    -Source @('msExchAuditDelegate') `
    -Destination 'msExchAuditDelegate' `
    -FlowType 'Direct' `
    -ValueMergeType 'Update' `
    -OutVariable syncRule
Add-ADSyncAttributeFlowMapping `
    -SynchronizationRule $syncRule[0] `
    -Source @('msExchAuditDelegateAdmin') `
    -Destination 'msExchAuditDelegateAdmin' `
    -FlowType 'Direct' `
    -ValueMergeType 'Update' `
    -OutVariable syncRule
Add-ADSyncAttributeFlowMapping `
    -SynchronizationRule $syncRule[0] `
    -Source @('msExchAuditOwner') `
    -Destination 'msExchAuditOwner' `
    -FlowType 'Direct' `
    -ValueMergeType 'Update' `
    -OutVariable syncRule
Add-ADSyncAttributeFlowMapping `
    -SynchronizationRule $syncRule[0] `
    -Source @('msExchBlockedSendersHash') `
    -Destination 'msExchBlockedSendersHash' `
    -FlowType 'Direct' `
    -ValueMergeType 'Update' `
    -OutVariable syncRule
Add-ADSyncAttributeFlowMapping `
    -SynchronizationRule $syncRule[0] `
    -Source @('msExchBypassAudit') `
    -Destination 'msExchBypassAudit' `
    -FlowType 'Direct' `
    -ValueMergeType 'Update' `
    -OutVariable syncRule
Add-ADSyncAttributeFlowMapping `
    -SynchronizationRule $syncRule[0] `
    -Source @('msExchELCExpirySuspensionEnd') `
    -Destination 'msExchELCExpirySuspensionEnd' `
    -FlowType 'Direct' `
    -ValueMergeType 'Update' `
    -OutVariable syncRule
Add-ADSyncAttributeFlowMapping `
    -SynchronizationRule $syncRule[0] `
    -Source @('msExchELCExpirySuspensionStart') `
    -Destination 'msExchELCExpirySuspensionStart' `
    -FlowType 'Direct' `
    -ValueMergeType 'Update' `
    -OutVariable syncRule
Add-ADSyncAttributeFlowMapping `
    -SynchronizationRule $syncRule[0] `
    -Source @('msExchELCMailboxFlags') `
    -Destination 'msExchELCMailboxFlags' `
    -FlowType 'Direct' `
    -ValueMergeType 'Update' `
    -OutVariable syncRule
Add-ADSyncAttributeFlowMapping `
    -SynchronizationRule $syncRule[0] `
    -Source @('msExchEnableModeration') `
    -Destination 'msExchEnableModeration' `
    -FlowType 'Direct' `
    -ValueMergeType 'Update' `
    -OutVariable syncRule
Add-ADSyncAttributeFlowMapping `
    -SynchronizationRule $syncRule[0] `
    -Source @('msExchExtensionCustomAttribute1') `
    -Destination 'msExchExtensionCustomAttribute1' `
    -FlowType 'Direct' `
    -ValueMergeType 'Update' `
    -OutVariable syncRule
Add-ADSyncAttributeFlowMapping `
    -SynchronizationRule $syncRule[0] `
    -Source @('msExchExtensionCustomAttribute2') `
    -Destination 'msExchExtensionCustomAttribute2' `
    -FlowType 'Direct' `
    -ValueMergeType 'Update' `
    -OutVariable syncRule
Add-ADSyncAttributeFlowMapping `
    -SynchronizationRule $syncRule[0] `
    -Source @('msExchExtensionCustomAttribute3') `
    -Destination 'msExchExtensionCustomAttribute3' `
    -FlowType 'Direct' `
    -ValueMergeType 'Update' `
    -OutVariable syncRule
Add-ADSyncAttributeFlowMapping `
    -SynchronizationRule $syncRule[0] `
    -Source @('msExchExtensionCustomAttribute4') `
    -Destination 'msExchExtensionCustomAttribute4' `
    -FlowType 'Direct' `
    -ValueMergeType 'Update' `
    -OutVariable syncRule
Add-ADSyncAttributeFlowMapping `
    -SynchronizationRule $syncRule[0] `
    -Source @('msExchExtensionCustomAttribute5') `
    -Destination 'msExchExtensionCustomAttribute5' `
    -FlowType 'Direct' `
    -ValueMergeType 'Update' `
    -OutVariable syncRule
Add-ADSyncAttributeFlowMapping `
    -SynchronizationRule $syncRule[0] `
    -Source @('msExchHideFromAddressLists') `
    -Destination 'msExchHideFromAddressLists' `
    -FlowType 'Direct' `
    -ValueMergeType 'Update' `
    -OutVariable syncRule
Add-ADSyncAttributeFlowMapping `
    -SynchronizationRule $syncRule[0] `
    -Source @('msExchImmutableId') `
    -Destination 'msExchImmutableId' `
    -FlowType 'Direct' `
    -ValueMergeType 'Update' `
    -OutVariable syncRule
Add-ADSyncAttributeFlowMapping `
    -SynchronizationRule $syncRule[0] `
    -Source @('msExchLitigationHoldDate') `
    -Destination 'msExchLitigationHoldDate' `
    -FlowType 'Direct' `
    -ValueMergeType 'Update' `
    -OutVariable syncRule
Add-ADSyncAttributeFlowMapping `
    -SynchronizationRule $syncRule[0] `
    -Source @('msExchLitigationHoldOwner') `
    -Destination 'msExchLitigationHoldOwner' `
    -FlowType 'Direct' `
    -ValueMergeType 'Update' `
    -OutVariable syncRule
Add-ADSyncAttributeFlowMapping `
    -SynchronizationRule $syncRule[0] `
    -Source @('msExchMailboxAuditEnable') `
    -Destination 'msExchMailboxAuditEnable' `
    -FlowType 'Direct' `
    -ValueMergeType 'Update' `
    -OutVariable syncRule
Add-ADSyncAttributeFlowMapping `
    -SynchronizationRule $syncRule[0] `
    -Source @('msExchMailboxAuditLogAgeLimit') `
    -Destination 'msExchMailboxAuditLogAgeLimit' `
    -FlowType 'Direct' `
    -ValueMergeType 'Update' `
    -OutVariable syncRule
Add-ADSyncAttributeFlowMapping `
    -SynchronizationRule $syncRule[0] `
    -Source @('msExchModerationFlags') `
    -Destination 'msExchModerationFlags' `
    -FlowType 'Direct' `
    -ValueMergeType 'Update' `
    -OutVariable syncRule
Add-ADSyncAttributeFlowMapping `
    -SynchronizationRule $syncRule[0] `
    -Source @('msExchRecipientDisplayType') `
    -Destination 'msExchRecipientDisplayType' `
    -FlowType 'Direct' `
    -ValueMergeType 'Update' `
    -OutVariable syncRule
Add-ADSyncAttributeFlowMapping `
    -SynchronizationRule $syncRule[0] `
    -Source @('msExchRecipientTypeDetails') `
    -Destination 'msExchRecipientTypeDetails' `
    -FlowType 'Direct' `
    -ValueMergeType 'Update' `
    -OutVariable syncRule
Add-ADSyncAttributeFlowMapping `
    -SynchronizationRule $syncRule[0] `
    -Source @('msExchRemoteRecipientType') `
    -Destination 'msExchRemoteRecipientType' `
    -FlowType 'Direct' `
    -ValueMergeType 'Update' `
    -OutVariable syncRule
Add-ADSyncAttributeFlowMapping `
    -SynchronizationRule $syncRule[0] `
    -Source @('msExchRequireAuthToSendTo') `
    -Destination 'msExchRequireAuthToSendTo' `
    -FlowType 'Direct' `
    -ValueMergeType 'Update' `
    -OutVariable syncRule
Add-ADSyncAttributeFlowMapping `
    -SynchronizationRule $syncRule[0] `
    -Source @('msExchResourceCapacity') `
    -Destination 'msExchResourceCapacity' `
    -FlowType 'Direct' `
    -ValueMergeType 'Update' `
    -OutVariable syncRule
Add-ADSyncAttributeFlowMapping `
    -SynchronizationRule $syncRule[0] `
    -Source @('msExchResourceDisplay') `
    -Destination 'msExchResourceDisplay' `
    -FlowType 'Direct' `
    -ValueMergeType 'Update' `
    -OutVariable syncRule
Add-ADSyncAttributeFlowMapping `
    -SynchronizationRule $syncRule[0] `
    -Source @('msExchResourceMetaData') `
    -Destination 'msExchResourceMetaData' `
    -FlowType 'Direct' `
    -ValueMergeType 'Update' `
    -OutVariable syncRule
Add-ADSyncAttributeFlowMapping `
    -SynchronizationRule $syncRule[0] `
    -Source @('msExchResourceSearchProperties') `
    -Destination 'msExchResourceSearchProperties' `
    -FlowType 'Direct' `
    -ValueMergeType 'Update' `
    -OutVariable syncRule
Add-ADSyncAttributeFlowMapping `
    -SynchronizationRule $syncRule[0] `
    -Source @('msExchRetentionComment') `
    -Destination 'msExchRetentionComment' `
    -FlowType 'Direct' `
    -ValueMergeType 'Update' `
    -OutVariable syncRule
Add-ADSyncAttributeFlowMapping `
    -SynchronizationRule $syncRule[0] `
    -Source @('msExchRetentionURL') `
    -Destination 'msExchRetentionURL' `
    -FlowType 'Direct' `
    -ValueMergeType 'Update' `
    -OutVariable syncRule
Add-ADSyncAttributeFlowMapping `
    -SynchronizationRule $syncRule[0] `
    -Source @('msExchSafeRecipientsHash') `
    -Destination 'msExchSafeRecipientsHash' `
    -FlowType 'Direct' `
    -ValueMergeType 'Update' `
    -OutVariable syncRule
Add-ADSyncAttributeFlowMapping `
    -SynchronizationRule $syncRule[0] `
    -Source @('msExchSafeSendersHash') `
    -Destination 'msExchSafeSendersHash' `
    -FlowType 'Direct' `
    -ValueMergeType 'Update' `
    -OutVariable syncRule
Add-ADSyncAttributeFlowMapping `
    -SynchronizationRule $syncRule[0] `
    -Source @('msExchSenderHintTranslations') `
    -Destination 'msExchSenderHintTranslations' `
    -FlowType 'Direct' `
    -ValueMergeType 'Update' `
    -OutVariable syncRule
Add-ADSyncAttributeFlowMapping `
    -SynchronizationRule $syncRule[0] `
    -Source @('msExchTeamMailboxExpiration') `
    -Destination 'msExchTeamMailboxExpiration' `
    -FlowType 'Direct' `
    -ValueMergeType 'Update' `
    -OutVariable syncRule
Add-ADSyncAttributeFlowMapping `
    -SynchronizationRule $syncRule[0] `
    -Source @('msExchTeamMailboxOwners') `
    -Destination 'msExchTeamMailboxOwners' `
    -FlowType 'Direct' `
    -ValueMergeType 'Update' `
    -OutVariable syncRule
Add-ADSyncAttributeFlowMapping `
    -SynchronizationRule $syncRule[0] `
    -Source @('msExchTeamMailboxSharePointUrl') `
    -Destination 'msExchTeamMailboxSharePointUrl' `
    -FlowType 'Direct' `
    -ValueMergeType 'Update' `
    -OutVariable syncRule
Add-ADSyncAttributeFlowMapping `
    -SynchronizationRule $syncRule[0] `
    -Source @('msExchUserHoldPolicies') `
    -Destination 'msExchUserHoldPolicies' `
    -FlowType 'Direct' `
    -ValueMergeType 'Update' `
    -OutVariable syncRule
Add-ADSyncAttributeFlowMapping `
    -SynchronizationRule $syncRule[0] `
    -Source @('proxyAddresses', 'mail') `
    -Destination 'proxyAddresses' `
    -FlowType 'Expression' `
    -ValueMergeType 'MergeCaseInsensitive' `
    -Expression 'IIF(IsPresent([proxyAddresses]),RemoveDuplicates(Trim(ImportedValue("proxyAddresses"))),IIF(IsPresent([mail]),"SMTP:"&[mail],NULL))' `
    -OutVariable syncRule
New-Object Microsoft.IdentityManagement.PowerShell.ObjectModel.ScopeCondition -ArgumentList 'mailNickname','','ISNOTNULL' -OutVariable condition0
Add-ADSyncScopeConditionGroup `
    -SynchronizationRule $syncRule[0] `
    -ScopeConditions @($condition0[0]) `
    -OutVariable syncRule
Add-ADSyncRule -SynchronizationRule $syncRule[0]
