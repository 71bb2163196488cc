//! Kubernetes identity of the pods on this node.
//!
//! The pod watch ((`pod_watch` in the agent crate)) turns API objects into
//! [`PodInfo`]s and sends them to the pipeline as [`WorkloadUpdate`]
//! observations, so recordings keep them and replays reproduce the live
//! output. The pipeline keeps a [`PodIndex`] and looks processes up in it by
//! the container id and pod uid their cgroup path carries. Everything here
//! is pure: no API calls.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use serde::{Deserialize, Serialize};

/// Pod labels copied into events by default: the recommended
/// `app.kubernetes.io/*` labels and the common `app`/`version`.
pub const DEFAULT_LABELS: &[&str] = &[
    "app",
    "version",
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/component",
    "app.kubernetes.io/part-of",
    "app.kubernetes.io/version",
];

/// The workload that owns a pod, after following ReplicaSet -> Deployment
/// and Job -> CronJob.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadRef {
    /// `Deployment`, `StatefulSet`, `DaemonSet`, `Job`, `CronJob`,
    /// `ReplicaSet` (without a Deployment), or a custom controller's kind.
    pub kind: String,
    /// Name of the owning object (after following ReplicaSet and Job to their owner).
    pub name: String,
    /// True when the owner's owner could not be read from the API and was
    /// derived from names (a ReplicaSet `web-5d9c7b` of a pod with
    /// `pod-template-hash=5d9c7b` belongs to Deployment `web`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub inferred: bool,
}

/// One container of a pod, as its runtime reported it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerInfo {
    /// 64 hex digits, without the `containerd://` (etc.) scheme.
    pub id: String,
    /// Container name from the pod spec.
    pub name: String,
    /// Image the container runs, as its status reports it.
    pub image: String,
    /// Image digest reference as the runtime resolved it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub image_id: String,
}

/// What the monitor keeps of a pod.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodInfo {
    /// Pod UID (`metadata.uid`), the key of the index.
    pub uid: String,
    /// `metadata.namespace` (`default` when absent).
    pub namespace: String,
    /// Pod name (`metadata.name`).
    pub name: String,
    /// Node the pod is scheduled on (`spec.nodeName`; empty when unset).
    pub node: String,
    /// `spec.serviceAccountName` (`default` when unset).
    pub service_account: String,
    /// The labels selected in the configuration (`kubernetes.labels`).
    pub labels: BTreeMap<String, String>,
    /// The owning workload; `None` for a pod without a controller.
    pub workload: Option<WorkloadRef>,
    /// Containers with a runtime id (started at least once).
    pub containers: Vec<ContainerInfo>,
}

/// A change in the pods of this node: one input of the pipeline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkloadUpdate {
    /// A pod was added or changed.
    Pod(PodInfo),
    /// A pod was deleted.
    PodDeleted {
        /// UID of the deleted pod.
        uid: String,
    },
    /// A complete (re)list finished: pods not named here are gone (their
    /// deletion happened while the watch was down).
    Synced {
        /// UIDs of every pod the list returned.
        uids: Vec<String>,
    },
}

/// The container id of a pod status entry: `containerd://<64 hex>`,
/// `cri-o://...`, `docker://...`.
pub fn container_id_of(status_id: &str) -> Option<String> {
    let id = status_id.rsplit_once("://").map_or(status_id, |(_, id)| id);
    (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_ascii_lowercase())
}

/// The Deployment a ReplicaSet belongs to, from names alone: the
/// ReplicaSet is called `<deployment>-<pod-template-hash>`.
pub fn deployment_from_replicaset_name(replicaset: &str, pod_template_hash: Option<&str>) -> Option<String> {
    let hash = pod_template_hash?;
    let name = replicaset.strip_suffix(hash)?.strip_suffix('-')?;
    (!name.is_empty()).then(|| name.to_owned())
}

/// What the index answers for a process: its pod and, when the container id
/// matched, which container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodMatch {
    /// The matched pod.
    pub pod: Arc<PodInfo>,
    /// Index of the process's container in `pod.containers`; `None` when matched by pod UID alone.
    pub container: Option<usize>,
}

/// Pods of this node by uid and by container id.
#[derive(Debug, Default)]
pub struct PodIndex {
    pods: HashMap<String, Arc<PodInfo>>,
    containers: HashMap<String, (String, usize)>,
    /// Deleted pods stay findable for a while: their processes may still
    /// be writing. (uid, deletion time in boot ns.)
    deleted: Vec<(String, u64)>,
    generation: u64,
}

/// How long a deleted pod stays in the index.
pub const DELETED_POD_GRACE_NS: u64 = 300 * 1_000_000_000;

impl PodIndex {
    /// Changes whenever the answer to some lookup may have changed.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Live pods (deleted ones kept for their grace period not counted).
    pub fn len(&self) -> usize {
        self.pods.len() - self.deleted.len()
    }

    /// True when no live pod is known (deleted ones in their grace period do not count).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Applies an update; `now_ns` is the boot-clock time of the update.
    pub fn apply(&mut self, update: WorkloadUpdate, now_ns: u64) {
        self.generation += 1;
        match update {
            WorkloadUpdate::Pod(p) => {
                self.deleted.retain(|(u, _)| *u != p.uid);
                self.remove_containers(&p.uid);
                for (i, c) in p.containers.iter().enumerate() {
                    self.containers.insert(c.id.clone(), (p.uid.clone(), i));
                }
                self.pods.insert(p.uid.clone(), Arc::new(p));
            }
            WorkloadUpdate::PodDeleted { uid } => {
                if self.pods.contains_key(&uid) && !self.deleted.iter().any(|(u, _)| *u == uid) {
                    self.deleted.push((uid, now_ns));
                }
            }
            WorkloadUpdate::Synced { uids } => {
                let live: std::collections::HashSet<&str> = uids.iter().map(String::as_str).collect();
                let gone: Vec<String> = self
                    .pods
                    .keys()
                    .filter(|u| !live.contains(u.as_str()) && !self.deleted.iter().any(|(d, _)| d == *u))
                    .cloned()
                    .collect();
                for uid in gone {
                    self.deleted.push((uid, now_ns));
                }
            }
        }
    }

    /// Forgets pods deleted more than [`DELETED_POD_GRACE_NS`] ago.
    pub fn expire(&mut self, now_ns: u64) {
        let mut expired = Vec::new();
        self.deleted.retain(|(uid, at)| {
            let keep = now_ns.saturating_sub(*at) < DELETED_POD_GRACE_NS;
            if !keep {
                expired.push(uid.clone());
            }
            keep
        });
        if expired.is_empty() {
            return;
        }
        self.generation += 1;
        for uid in expired {
            self.remove_containers(&uid);
            self.pods.remove(&uid);
        }
    }

    fn remove_containers(&mut self, uid: &str) {
        if let Some(old) = self.pods.get(uid) {
            for c in &old.containers {
                if self.containers.get(&c.id).is_some_and(|(u, _)| u == uid) {
                    self.containers.remove(&c.id);
                }
            }
        }
    }

    /// The pod of a process, by container id first (exact), then by the pod
    /// uid of its cgroup path.
    pub fn lookup(&self, container_id: Option<&str>, pod_uid: Option<&str>) -> Option<PodMatch> {
        if let Some((uid, i)) = container_id.and_then(|c| self.containers.get(c)) {
            if let Some(pod) = self.pods.get(uid) {
                return Some(PodMatch {
                    pod: pod.clone(),
                    container: Some(*i),
                });
            }
        }
        let pod = self.pods.get(pod_uid?)?;
        Some(PodMatch {
            pod: pod.clone(),
            container: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const UID: &str = "7b4d6e7e-1f1c-4a0e-9a36-0c3c0b1f9d11";

    #[test]
    fn container_ids_from_status() {
        assert_eq!(container_id_of(&format!("cri-o://{CID}")).as_deref(), Some(CID));
        assert_eq!(
            container_id_of(&format!("docker://{}", CID.to_uppercase())).as_deref(),
            Some(CID)
        );
        assert_eq!(container_id_of("containerd://short"), None);
    }

    fn info(uid: &str, cid: &str, name: &str) -> PodInfo {
        PodInfo {
            uid: uid.into(),
            namespace: "ns".into(),
            name: name.into(),
            node: "n".into(),
            service_account: "sa".into(),
            labels: BTreeMap::new(),
            workload: None,
            containers: vec![ContainerInfo {
                id: cid.into(),
                name: "c".into(),
                image: "i".into(),
                image_id: String::new(),
            }],
        }
    }

    #[test]
    fn index_lookup_update_delete_and_resync() {
        let mut ix = PodIndex::default();
        let g0 = ix.generation();
        ix.apply(WorkloadUpdate::Pod(info(UID, CID, "a")), 0);
        assert!(ix.generation() > g0);
        let m = ix.lookup(Some(CID), None).unwrap();
        assert_eq!((m.pod.name.as_str(), m.container), ("a", Some(0)));
        // Unknown container of a known pod (not started yet in the status).
        let other = "f".repeat(64);
        let m = ix.lookup(Some(&other), Some(UID)).unwrap();
        assert_eq!(m.container, None);
        assert!(ix.lookup(Some(&other), None).is_none());
        // A restart changes the container id: the old one no longer maps.
        ix.apply(WorkloadUpdate::Pod(info(UID, &other, "a")), 1);
        assert!(ix.lookup(Some(CID), None).is_none());
        assert_eq!(ix.lookup(Some(&other), None).unwrap().container, Some(0));
        // Deleted pods stay for the grace period.
        ix.apply(WorkloadUpdate::PodDeleted { uid: UID.into() }, 10);
        ix.expire(10 + DELETED_POD_GRACE_NS - 1);
        assert!(ix.lookup(None, Some(UID)).is_some());
        ix.expire(10 + DELETED_POD_GRACE_NS);
        assert!(ix.lookup(None, Some(UID)).is_none());
        assert!(ix.lookup(Some(&other), None).is_none());
        assert!(ix.is_empty());
        // A relist that no longer names a pod deletes it (missed deletion).
        ix.apply(WorkloadUpdate::Pod(info("u1", &"1".repeat(64), "p1")), 0);
        ix.apply(WorkloadUpdate::Pod(info("u2", &"2".repeat(64), "p2")), 0);
        ix.apply(
            WorkloadUpdate::Synced {
                uids: vec!["u2".into()],
            },
            5,
        );
        ix.expire(5 + DELETED_POD_GRACE_NS);
        assert!(ix.lookup(None, Some("u1")).is_none());
        assert!(ix.lookup(None, Some("u2")).is_some());
        // A deleted pod that comes back (same uid) is live again.
        ix.apply(WorkloadUpdate::PodDeleted { uid: "u2".into() }, 6);
        ix.apply(WorkloadUpdate::Pod(info("u2", &"2".repeat(64), "p2")), 7);
        ix.expire(7 + 2 * DELETED_POD_GRACE_NS);
        assert!(ix.lookup(None, Some("u2")).is_some());
    }
}
