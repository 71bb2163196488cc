//! Workload identity of a process: its Kubernetes pod and owning workload,
//! and its SPIFFE ID, as attached to event and alert parties.

use std::{collections::BTreeMap, sync::Arc};

use rustc_hash::FxHashMap;
use serde::Serialize;

use super::{
    kubernetes::{PodIndex, WorkloadRef, WorkloadUpdate},
    spiffe::SpiffeMapper,
    ProcessInfo,
};

/// The Kubernetes side of a process's identity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KubernetesIdentity {
    /// The pod's namespace (`kubernetes.namespace` in events).
    pub namespace: String,
    /// The pod's name.
    pub pod: String,
    /// The pod's UID.
    pub pod_uid: String,
    /// Service account the pod runs as.
    pub service_account: String,
    /// Node the pod is scheduled on.
    pub node: String,
    /// Owning workload (`kind`, `name`, `inferred`); omitted for a pod without a controller.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workload: Option<WorkloadRef>,
    /// Container name and image, when the process's container id is in the
    /// pod's status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// That container's image, as its status reports it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Image digest reference (`registry/x@sha256:...`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
    /// Pod labels selected by `kubernetes.labels`; omitted when none.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// Identity beyond the process itself.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct WorkloadIdentity {
    /// The process's pod, when its container id or pod UID matches one on this node: `kubernetes` in events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<KubernetesIdentity>,
    /// From the pod's service account, else (no pod) the first matching `[[identity.spiffe]]`: `spiffe_id` in events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spiffe_id: Option<String>,
}

impl WorkloadIdentity {
    /// `namespace/service-account` when the process runs in a pod.
    pub fn service_account(&self) -> Option<String> {
        let k = self.kubernetes.as_ref()?;
        Some(format!("{}/{}", k.namespace, k.service_account))
    }

    /// Namespace and workload for metric labels: the owning workload's name
    /// (else the pod's) in a cluster, else the systemd unit on a plain host.
    pub fn metric_labels<'a>(&'a self, process: Option<&'a ProcessInfo>) -> (&'a str, &'a str) {
        match &self.kubernetes {
            Some(k) => (
                &k.namespace,
                k.workload.as_ref().map_or(k.pod.as_str(), |w| w.name.as_str()),
            ),
            None => ("", process.and_then(|p| p.systemd_unit.as_deref()).unwrap_or("")),
        }
    }
}

/// Resolves processes to workload identities; owned by the pipeline, fed
/// with pod updates.
pub struct WorkloadResolver {
    pods: PodIndex,
    spiffe: SpiffeMapper,
    /// Per process (pid, start time): the index generation it was resolved
    /// at and the answer.
    cache: FxHashMap<(u32, u64), Resolved>,
}

/// The index generation a process was resolved at, and the answer.
type Resolved = (u64, Option<Arc<WorkloadIdentity>>);

impl WorkloadResolver {
    /// A resolver with no pods yet, deriving SPIFFE IDs with `spiffe`.
    pub fn new(spiffe: SpiffeMapper) -> Self {
        Self {
            pods: PodIndex::default(),
            spiffe,
            cache: FxHashMap::default(),
        }
    }

    /// Changes when a pod update may change some process's identity.
    pub fn generation(&self) -> u64 {
        self.pods.generation()
    }

    /// Live pods known.
    pub fn pod_count(&self) -> usize {
        self.pods.len()
    }

    /// Applies a pod update received at `now_ns` (`CLOCK_BOOTTIME`; a deletion's grace period counts from it).
    pub fn apply(&mut self, update: WorkloadUpdate, now_ns: u64) {
        self.pods.apply(update, now_ns);
    }

    /// Time passes: deleted pods past their grace period go.
    pub fn expire(&mut self, now_ns: u64) {
        self.pods.expire(now_ns);
    }

    /// The process exited.
    pub fn forget(&mut self, pid: u32, start_ns: u64) {
        self.cache.remove(&(pid, start_ns));
    }

    /// The identity of `p`, `None` when there is nothing beyond the process.
    pub fn resolve(&mut self, p: &ProcessInfo) -> Option<Arc<WorkloadIdentity>> {
        let gen = self.pods.generation();
        let key = (p.pid, p.start_ns);
        if let Some((g, w)) = self.cache.get(&key) {
            if *g == gen {
                return w.clone();
            }
        }
        let w = self.compute(p).map(Arc::new);
        // Keep the old Arc when nothing changed, so callers comparing
        // pointers do not re-serialise.
        let w = match self.cache.get(&key) {
            Some((_, Some(old))) if w.as_deref() == Some(&**old) => Some(old.clone()),
            _ => w,
        };
        self.cache.insert(key, (gen, w.clone()));
        w
    }

    fn compute(&self, p: &ProcessInfo) -> Option<WorkloadIdentity> {
        if let Some(m) = self.pods.lookup(p.container_id.as_deref(), p.pod_uid.as_deref()) {
            let pod = &m.pod;
            let container = m.container.and_then(|i| pod.containers.get(i));
            return Some(WorkloadIdentity {
                spiffe_id: self.spiffe.for_service_account(&pod.namespace, &pod.service_account),
                kubernetes: Some(KubernetesIdentity {
                    namespace: pod.namespace.clone(),
                    pod: pod.name.clone(),
                    pod_uid: pod.uid.clone(),
                    service_account: pod.service_account.clone(),
                    node: pod.node.clone(),
                    workload: pod.workload.clone(),
                    container: container.map(|c| c.name.clone()),
                    image: container.map(|c| c.image.clone()),
                    image_id: container.map(|c| c.image_id.clone()).filter(|i| !i.is_empty()),
                    labels: pod.labels.clone(),
                }),
            });
        }
        let spiffe_id = self.spiffe.for_process(p)?;
        Some(WorkloadIdentity {
            kubernetes: None,
            spiffe_id: Some(spiffe_id),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{
        kubernetes::{ContainerInfo, PodInfo},
        spiffe::IdentityConfig,
    };

    const CID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn a_pod_that_appears_later_is_picked_up_and_pointers_stay_stable() {
        let mut r = WorkloadResolver::new(SpiffeMapper::new(IdentityConfig::default(), "n").unwrap());
        let p = ProcessInfo {
            pid: 7,
            start_ns: 1,
            container_id: Some(CID.into()),
            pod_uid: Some("u".into()),
            ..Default::default()
        };
        assert_eq!(r.resolve(&p), None);
        r.apply(
            WorkloadUpdate::Pod(PodInfo {
                uid: "u".into(),
                namespace: "team-a".into(),
                name: "agent-0".into(),
                node: "n".into(),
                service_account: "agent".into(),
                labels: BTreeMap::new(),
                workload: Some(WorkloadRef {
                    kind: "StatefulSet".into(),
                    name: "agent".into(),
                    inferred: false,
                }),
                containers: vec![ContainerInfo {
                    id: CID.into(),
                    name: "mcp".into(),
                    image: "img:1".into(),
                    image_id: String::new(),
                }],
            }),
            0,
        );
        let w = r.resolve(&p).unwrap();
        let k = w.kubernetes.as_ref().unwrap();
        assert_eq!((k.pod.as_str(), k.container.as_deref()), ("agent-0", Some("mcp")));
        assert_eq!(
            w.spiffe_id.as_deref(),
            Some("spiffe://cluster.local/ns/team-a/sa/agent")
        );
        assert_eq!(w.service_account().as_deref(), Some("team-a/agent"));
        assert_eq!(w.metric_labels(Some(&p)), ("team-a", "agent"));
        // An unrelated update bumps the generation; the answer is the same
        // Arc.
        r.apply(WorkloadUpdate::PodDeleted { uid: "other".into() }, 1);
        assert!(Arc::ptr_eq(&w, &r.resolve(&p).unwrap()));
    }
}
