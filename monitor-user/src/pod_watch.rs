//! The node-scoped pod watch: lists and watches the pods of this node
//! (field selector `spec.nodeName=<node>`), resolves their owning
//! workload, and sends [`WorkloadUpdate`]s to the agent.
//!
//! kube-runtime's watcher resumes a watch that ends from the last
//! resourceVersion and re-lists after `410 Gone`; every (re)list ends with a
//! [`WorkloadUpdate::Synced`] so pods deleted while the watch was down are
//! dropped. Errors are retried with backoff, logged and counted; they never
//! stop capture.

use std::{collections::HashMap, path::PathBuf, sync::Arc};

use futures_util::StreamExt;
use k8s_openapi::{
    api::{apps::v1::ReplicaSet, batch::v1::Job, core::v1::Pod},
    apimachinery::pkg::apis::meta::v1::OwnerReference,
};
use kube::{
    runtime::{watcher, WatchStreamExt},
    Api, Client,
};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::identity::kubernetes::{
    container_id_of, deployment_from_replicaset_name, ContainerInfo, PodInfo, WorkloadRef, WorkloadUpdate,
    DEFAULT_LABELS,
};
use crate::metrics::Metrics;

/// Whether to watch the Kubernetes API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KubernetesMode {
    /// On when the agent runs in a pod (`KUBERNETES_SERVICE_HOST` is set)
    /// or `api_url` is given.
    Auto,
    /// Always watch; failing to start the watch stops the agent's start.
    On,
    /// Never watch the API.
    Off,
}

/// `[kubernetes]` settings.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct KubernetesConfig {
    /// When to watch the Kubernetes API for this node's pods (default `auto`).
    pub mode: KubernetesMode,
    /// This node's name; empty: the `NODE_NAME` environment variable (the
    /// DaemonSet sets it from `spec.nodeName`).
    pub node_name: String,
    /// API server URL; empty: the in-cluster service account (or
    /// `KUBECONFIG`/`~/.kube/config` outside a pod).
    pub api_url: String,
    /// Bearer token file used with `api_url`.
    pub token_file: Option<PathBuf>,
    /// CA bundle (PEM) for an `https` `api_url`.
    pub ca_file: Option<PathBuf>,
    /// Pod label keys copied into events.
    pub labels: Vec<String>,
    /// Ask the API for the owners of ReplicaSets and Jobs (Deployment,
    /// CronJob); without it, or when the request fails, Deployments are
    /// derived from ReplicaSet names and marked `inferred`.
    pub resolve_owners: bool,
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        Self {
            mode: KubernetesMode::Auto,
            node_name: String::new(),
            api_url: String::new(),
            token_file: None,
            ca_file: None,
            labels: DEFAULT_LABELS.iter().map(|s| s.to_string()).collect(),
            resolve_owners: true,
        }
    }
}

impl KubernetesConfig {
    /// Whether the watch runs, given the environment.
    pub fn active(&self) -> bool {
        match self.mode {
            KubernetesMode::On => true,
            KubernetesMode::Off => false,
            KubernetesMode::Auto => !self.api_url.is_empty() || std::env::var_os("KUBERNETES_SERVICE_HOST").is_some(),
        }
    }

    /// The node name to watch, or an error that says how to set it.
    pub fn node(&self) -> anyhow::Result<String> {
        if !self.node_name.is_empty() {
            return Ok(self.node_name.clone());
        }
        match std::env::var("NODE_NAME") {
            Ok(n) if !n.is_empty() => Ok(n),
            _ => anyhow::bail!(
                "the pod watch needs this node's name: set kubernetes.node_name, or the NODE_NAME environment \
                 variable from the downward API (env: NODE_NAME valueFrom fieldRef spec.nodeName, as \
                 deploy/kubernetes/daemonset.yaml does), or set kubernetes.mode = \"off\""
            ),
        }
    }

    async fn client(&self) -> anyhow::Result<Client> {
        let config = if self.api_url.is_empty() {
            kube::Config::infer().await.map_err(|e| {
                anyhow::anyhow!(
                    "cannot find Kubernetes API credentials: {e}.\nFix: run in a pod with a service account, \
                     or set kubernetes.api_url (and token_file), or set kubernetes.mode = \"off\""
                )
            })?
        } else {
            let url = self
                .api_url
                .parse()
                .map_err(|e| anyhow::anyhow!("kubernetes.api_url {:?} is not a URL: {e}", self.api_url))?;
            let mut c = kube::Config::new(url);
            if let Some(t) = &self.token_file {
                c.auth_info.token_file = Some(t.display().to_string());
            }
            if let Some(ca) = &self.ca_file {
                let pem = std::fs::read(ca)
                    .map_err(|e| anyhow::anyhow!("cannot read kubernetes.ca_file {}: {e}", ca.display()))?;
                let certs: Vec<Vec<u8>> = rustls_pki_types::pem::PemObject::pem_slice_iter(&pem)
                    .filter_map(|c: Result<rustls_pki_types::CertificateDer<'static>, _>| c.ok())
                    .map(|c| c.to_vec())
                    .collect();
                anyhow::ensure!(
                    !certs.is_empty(),
                    "kubernetes.ca_file {} holds no PEM certificate",
                    ca.display()
                );
                c.root_cert = Some(certs);
            }
            c
        };
        Client::try_from(config).map_err(|e| anyhow::anyhow!("cannot build the Kubernetes client: {e}"))
    }
}

/// Most owners remembered (ReplicaSets and Jobs seen on this node).
const MAX_OWNER_CACHE: usize = 4096;

/// Answers "who controls this ReplicaSet/Job", with a cache: owners do not
/// change once set.
struct Owners {
    client: Client,
    enabled: bool,
    cache: HashMap<(String, String, String), Option<OwnerReference>>,
    metrics: Arc<Metrics>,
}

impl Owners {
    /// `Some(parent or None)` when the API answered, `None` when it could
    /// not be asked.
    async fn parent(&mut self, namespace: &str, owner: &OwnerReference) -> Option<Option<OwnerReference>> {
        if !self.enabled || !matches!(owner.kind.as_str(), "ReplicaSet" | "Job") {
            return None;
        }
        let key = (namespace.to_owned(), owner.kind.clone(), owner.name.clone());
        if let Some(p) = self.cache.get(&key) {
            return Some(p.clone());
        }
        let meta = match owner.kind.as_str() {
            "ReplicaSet" => Api::<ReplicaSet>::namespaced(self.client.clone(), namespace)
                .get_opt(&owner.name)
                .await
                .map(|o| o.map(|o| o.metadata)),
            _ => Api::<Job>::namespaced(self.client.clone(), namespace)
                .get_opt(&owner.name)
                .await
                .map(|o| o.map(|o| o.metadata)),
        };
        let parent = match meta {
            Ok(Some(m)) => controller_of(m.owner_references.as_ref()).cloned(),
            // Gone already (or not visible): fall back to names; do not
            // cache.
            Ok(None) => return None,
            Err(e) => {
                log::warn!(
                    "kubernetes: cannot read {} {namespace}/{}: {e} (the workload is derived from names; \
                     check the ClusterRole grants get on replicasets and jobs)",
                    owner.kind,
                    owner.name
                );
                self.metrics
                    .kubernetes
                    .errors
                    .with_label_values(&["owner_lookup"])
                    .inc();
                return None;
            }
        };
        if self.cache.len() >= MAX_OWNER_CACHE {
            self.cache.clear();
        }
        self.cache.insert(key, parent.clone());
        Some(parent)
    }
}

/// Starts the watch. Returns the receiving end of the updates; the task
/// ends when the receiver is dropped.
pub async fn start(cfg: &KubernetesConfig, metrics: Arc<Metrics>) -> anyhow::Result<mpsc::Receiver<WorkloadUpdate>> {
    let node = cfg.node()?;
    let client = cfg.client().await?;
    // Backpressure rather than loss: a slow pipeline slows the watch.
    let (tx, rx) = mpsc::channel(1024);
    let labels = cfg.labels.clone();
    let owners = Owners {
        client: client.clone(),
        enabled: cfg.resolve_owners,
        cache: HashMap::new(),
        metrics: metrics.clone(),
    };
    log::info!("kubernetes: watching the pods of node {node}");
    tokio::spawn(watch(client, node, labels, owners, tx, metrics));
    Ok(rx)
}

async fn watch(
    client: Client,
    node: String,
    labels: Vec<String>,
    mut owners: Owners,
    tx: mpsc::Sender<WorkloadUpdate>,
    metrics: Arc<Metrics>,
) {
    let pods: Api<Pod> = Api::all(client);
    let config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    let stream = watcher(pods, config).default_backoff();
    futures_util::pin_mut!(stream);
    let mut listed: Vec<String> = Vec::new();
    while let Some(item) = stream.next().await {
        let update = match item {
            Ok(watcher::Event::Init) => {
                metrics.kubernetes.lists.inc();
                listed.clear();
                continue;
            }
            Ok(watcher::Event::InitDone) => {
                metrics.kubernetes.synced.set(1);
                log::info!("kubernetes: {} pods on node {node}", listed.len());
                WorkloadUpdate::Synced {
                    uids: std::mem::take(&mut listed),
                }
            }
            Ok(watcher::Event::InitApply(pod)) | Ok(watcher::Event::Apply(pod)) => {
                let Some(info) = convert(&pod, &labels, &mut owners).await else {
                    continue;
                };
                listed.push(info.uid.clone());
                metrics.kubernetes.pod_updates.inc();
                WorkloadUpdate::Pod(info)
            }
            Ok(watcher::Event::Delete(pod)) => match pod.metadata.uid {
                Some(uid) => WorkloadUpdate::PodDeleted { uid },
                None => continue,
            },
            Err(e) => {
                let kind = match &e {
                    watcher::Error::WatchError(s) if s.code == 410 => "gone",
                    watcher::Error::InitialListFailed(_) => "list",
                    watcher::Error::WatchStartFailed(_) => "watch_start",
                    _ => "watch",
                };
                if kind == "gone" {
                    log::info!("kubernetes: the watch's resourceVersion expired (410 Gone); listing the pods again");
                } else {
                    log::warn!("kubernetes: {e} (retrying with backoff)");
                }
                metrics.kubernetes.errors.with_label_values(&[kind]).inc();
                continue;
            }
        };
        if tx.send(update).await.is_err() {
            return;
        }
    }
}

async fn convert(pod: &Pod, labels: &[String], owners: &mut Owners) -> Option<PodInfo> {
    let owner = controller_of(pod.metadata.owner_references.as_ref());
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let (parent, known) = match owner {
        Some(o) => match owners.parent(namespace, o).await {
            Some(p) => (p, true),
            None => (None, false),
        },
        None => (None, false),
    };
    let hash = pod
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("pod-template-hash"))
        .map(String::as_str);
    pod_info(pod, workload_of(owner, parent.as_ref(), known, hash), labels)
}

// ------------------------------------------------ API objects to PodInfo

/// The controlling owner reference of an object, if any.
pub fn controller_of(owners: Option<&Vec<OwnerReference>>) -> Option<&OwnerReference> {
    owners?.iter().find(|o| o.controller == Some(true))
}

/// Converts an API pod. `workload` is the owner already resolved by the
/// caller (which may ask the API about ReplicaSets and Jobs); `labels` are
/// the label keys to keep.
pub fn pod_info(pod: &Pod, workload: Option<WorkloadRef>, labels: &[String]) -> Option<PodInfo> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let mut containers = Vec::new();
    if let Some(status) = &pod.status {
        let all = [
            &status.container_statuses,
            &status.init_container_statuses,
            &status.ephemeral_container_statuses,
        ];
        for list in all.into_iter().flatten() {
            for c in list {
                if let Some(id) = c.container_id.as_deref().and_then(container_id_of) {
                    containers.push(ContainerInfo {
                        id,
                        name: c.name.clone(),
                        image: c.image.clone(),
                        image_id: c.image_id.clone(),
                    });
                }
            }
        }
    }
    let pod_labels = meta.labels.as_ref();
    Some(PodInfo {
        uid: meta.uid.clone()?,
        namespace: meta.namespace.clone().unwrap_or_else(|| "default".into()),
        name: meta.name.clone()?,
        node: spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        service_account: spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".into()),
        labels: labels
            .iter()
            .filter_map(|k| Some((k.clone(), pod_labels?.get(k)?.clone())))
            .collect(),
        workload,
        containers,
    })
}

/// The workload of a pod whose controller is `owner`, when no further API
/// lookup is needed or possible. ReplicaSets and Jobs are returned as they
/// are unless `parent` (their own controller, from the API) is given; a
/// ReplicaSet without a known parent falls back to the name rule.
pub fn workload_of(
    owner: Option<&OwnerReference>,
    parent: Option<&OwnerReference>,
    parent_known: bool,
    pod_template_hash: Option<&str>,
) -> Option<WorkloadRef> {
    let owner = owner?;
    if let Some(p) = parent {
        return Some(WorkloadRef {
            kind: p.kind.clone(),
            name: p.name.clone(),
            inferred: false,
        });
    }
    if owner.kind == "ReplicaSet" && !parent_known {
        if let Some(d) = deployment_from_replicaset_name(&owner.name, pod_template_hash) {
            return Some(WorkloadRef {
                kind: "Deployment".into(),
                name: d,
                inferred: true,
            });
        }
    }
    Some(WorkloadRef {
        kind: owner.kind.clone(),
        name: owner.name.clone(),
        inferred: false,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    const CID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const UID: &str = "7b4d6e7e-1f1c-4a0e-9a36-0c3c0b1f9d11";

    fn pod_json(uid: &str, cid: &str) -> serde_json::Value {
        serde_json::json!({
            "metadata": {
                "name": "web-5d9c7b-x2x4z", "namespace": "team-a", "uid": uid,
                "labels": {"app": "web", "pod-template-hash": "5d9c7b", "secret-ish": "no"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-5d9c7b",
                                     "uid": "rs-uid", "controller": true}]
            },
            "spec": {"nodeName": "node-1", "serviceAccountName": "mcp-agent",
                     "containers": [{"name": "server", "image": "ghcr.io/x/server:1"}]},
            "status": {"containerStatuses": [
                {"name": "server", "containerID": format!("containerd://{cid}"), "image": "ghcr.io/x/server:1",
                 "imageID": "", "ready": true, "restartCount": 0}
            ]}
        })
    }

    #[test]
    fn pods_convert_with_selected_labels_and_runtime_ids() {
        let pod: Pod = serde_json::from_value(pod_json(UID, CID)).unwrap();
        let owner = controller_of(pod.metadata.owner_references.as_ref());
        let hash = pod.metadata.labels.as_ref().and_then(|l| l.get("pod-template-hash"));
        let w = workload_of(owner, None, false, hash.map(String::as_str));
        let info = pod_info(&pod, w, &["app".into(), "missing".into()]).unwrap();
        assert_eq!(info.namespace, "team-a");
        assert_eq!(info.service_account, "mcp-agent");
        assert_eq!(info.node, "node-1");
        assert_eq!(info.labels, BTreeMap::from([("app".into(), "web".into())]));
        assert_eq!(
            info.workload,
            Some(WorkloadRef {
                kind: "Deployment".into(),
                name: "web".into(),
                inferred: true
            })
        );
        assert_eq!(info.containers[0].id, CID);
        assert_eq!(info.containers[0].name, "server");
    }

    #[test]
    fn owners_resolve_through_the_api_answer_first() {
        let rs = OwnerReference {
            kind: "ReplicaSet".into(),
            name: "web-5d9c7b".into(),
            controller: Some(true),
            ..Default::default()
        };
        let dep = OwnerReference {
            kind: "Deployment".into(),
            name: "web-real".into(),
            ..Default::default()
        };
        let w = workload_of(Some(&rs), Some(&dep), true, Some("5d9c7b")).unwrap();
        assert_eq!(
            (w.kind.as_str(), w.name.as_str(), w.inferred),
            ("Deployment", "web-real", false)
        );
        // The API said the ReplicaSet has no owner: it is the workload.
        let w = workload_of(Some(&rs), None, true, Some("5d9c7b")).unwrap();
        assert_eq!(w.kind, "ReplicaSet");
        // No hash label: no inference.
        let w = workload_of(Some(&rs), None, false, None).unwrap();
        assert_eq!(w.kind, "ReplicaSet");
        assert_eq!(
            deployment_from_replicaset_name("web-abc", Some("abc")).as_deref(),
            Some("web")
        );
        assert_eq!(deployment_from_replicaset_name("web-abc", Some("xyz")), None);
        assert_eq!(deployment_from_replicaset_name("-abc", Some("abc")), None);
        let ss = OwnerReference {
            kind: "StatefulSet".into(),
            name: "db".into(),
            controller: Some(true),
            ..Default::default()
        };
        assert_eq!(workload_of(Some(&ss), None, false, None).unwrap().kind, "StatefulSet");
        assert_eq!(workload_of(None, None, false, None), None);
    }
}
