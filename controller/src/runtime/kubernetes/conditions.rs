//! Condition types and reasons on `Agent.status.conditions`: public API,
//! documented in docs/conditions.md (keep both in step).

/// Summary: the agent's pod is up and its sidecar holds a certificate and a link.
pub const READY: &str = "Ready";
/// The agent's PersistentVolumeClaim exists.
pub const STORAGE_READY: &str = "StorageReady";
/// The agent's pod exists and runs (not necessarily Ready).
pub const POD_SCHEDULED: &str = "PodScheduled";

pub mod reason {
    /// Ready=True: the pod is Ready.
    pub const AGENT_READY: &str = "AgentReady";
    /// Ready=False: the pod was created and is starting.
    pub const POD_STARTING: &str = "PodStarting";
    /// Ready=False: the pod failed or vanished and a new one is being made.
    pub const POD_RECREATING: &str = "PodRecreating";
    /// Ready=False: creating the pod failed (see message).
    pub const POD_CREATE_FAILED: &str = "PodCreateFailed";
    /// Ready=False: `spec.mode` is Suspended; the pod is stopped, the volume kept.
    pub const SUSPENDED: &str = "Suspended";
    /// Ready=False: `spec.template` names no AgentTemplate.
    pub const TEMPLATE_NOT_FOUND: &str = "TemplateNotFound";
    /// Ready=False: the template or agent is invalid (the message names the field).
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// Ready=False: an older Agent serves the same owner; this one gets no pod.
    pub const DUPLICATE_OWNER: &str = "DuplicateOwner";
    /// Ready=False: the previous pod is still terminating; the next one
    /// waits for it (the volume is read-write-once).
    pub const POD_TERMINATING: &str = "PodTerminating";
    /// StorageReady=False, Ready=False: the existing claim holds another
    /// owner's data (retained from an earlier Agent of this name); not mounted.
    pub const VOLUME_OWNER_MISMATCH: &str = "VolumeOwnerMismatch";
    /// StorageReady=True: the claim exists.
    pub const VOLUME_CLAIMED: &str = "VolumeClaimed";
    /// StorageReady=False: the claim could not be created (see message).
    pub const VOLUME_CLAIM_FAILED: &str = "VolumeClaimFailed";
    /// PodScheduled=True / False as the pod comes and goes.
    pub const POD_CREATED: &str = "PodCreated";
    pub const POD_ABSENT: &str = "PodAbsent";
}

/// Event reasons (Kubernetes Events on the Agent; `action` in brackets).
pub mod event {
    pub const VOLUME_CLAIM_CREATED: &str = "VolumeClaimCreated"; // [CreateVolumeClaim]
    pub const POD_CREATED: &str = "PodCreated"; // [CreatePod]
    pub const POD_RECREATED: &str = "PodRecreated"; // [RecreatePod]
    pub const POD_OUTDATED: &str = "PodOutdated"; // [RecreatePod]
    pub const POD_DELETED: &str = "PodDeleted"; // [Suspend | Cleanup]
    pub const SUSPENDED: &str = "Suspended"; // [Suspend]
    pub const IDLE_SUSPENDED: &str = "IdleSuspended"; // [Suspend]
    pub const VOLUME_CLAIM_DELETED: &str = "VolumeClaimDeleted"; // [Cleanup]
    pub const VOLUME_CLAIM_RETAINED: &str = "VolumeClaimRetained"; // [Cleanup]
    // Warnings, recorded once when the problem appears (not on every retry).
    pub const INVALID_SPEC: &str = "InvalidSpec"; // [Validate]
    pub const TEMPLATE_NOT_FOUND: &str = "TemplateNotFound"; // [Validate]
    pub const DUPLICATE_OWNER: &str = "DuplicateOwner"; // [Validate]
    pub const POD_CREATE_FAILED: &str = "PodCreateFailed"; // [CreatePod]
    pub const VOLUME_OWNER_MISMATCH: &str = "VolumeOwnerMismatch"; // [CreateVolumeClaim]
    pub const RETENTION_DEFAULTED: &str = "RetentionDefaulted"; // [Cleanup]
    pub const CLEANUP_INCOMPLETE: &str = "CleanupIncomplete"; // [Cleanup]
}
