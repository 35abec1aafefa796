//! The watches that keep [`State`] current, and the record of which of them are failing (for
//! `is_stale`); apart from the rules NMI decides with, which only read the mirrors.

use std::{
    sync::{Arc, atomic::Ordering},
    time::Instant,
};

use api::{AzureAssignedIdentity, AzureIdentity, AzureIdentityBinding, AzurePodIdentityException};
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, runtime::watcher};
use matching::AssignedFacts;
use mirror::sync;

use super::{Mode, State, WatchedPod};

/// Objects per page of the lists of the node's pods and AzureAssignedIdentities.
const LIST_PAGE: u32 = 50;

impl State {
    pub(super) fn watch_proven(&self, kind: &'static str) {
        if !self.any_failing.load(Ordering::Acquire) {
            return;
        }
        let mut failing = sync::lock(&self.failing_since);
        let was = failing.remove(kind).is_some();
        self.any_failing.store(!failing.is_empty(), Ordering::Release);
        drop(failing);
        if was {
            tracing::info!(kind, "watch proven again");
        }
    }

    /// Records a watch's failure; true when it was proven until now.
    pub(super) fn watch_failed(&self, kind: &'static str) -> bool {
        let mut failing = sync::lock(&self.failing_since);
        let first = !failing.contains_key(kind);
        failing.entry(kind).or_insert_with(Instant::now);
        self.any_failing.store(true, Ordering::Release);
        first
    }

    /// The Kubernetes client of the watches, once they are spawned: NMI also writes its findings
    /// about AzureAssignedIdentities with it.
    pub fn client(&self) -> Option<&kube::Client> {
        self.client.get()
    }

    /// Spawns the watches that keep this state current. They run until the runtime stops.
    pub fn spawn_watches(self: &Arc<Self>, client: kube::Client) {
        let _ = self.client.set(client.clone());
        let node = self.node.clone();
        // The node's pods and AzureAssignedIdentities, NMI's largest objects (managed fields,
        // conditions; a whole identity and binding each), are listed in pages of LIST_PAGE: a
        // page is held whole, as text and as objects, while the mirror converts it, and at
        // kube's default of 500 one page set NMI's peak heap (issue 23 §7).
        let paged = || watcher::Config::default().page_size(LIST_PAGE);
        let pods = paged().fields(&format!("spec.nodeName={node}"));
        mirror::spawn(
            self.clone(),
            Api::<Pod>::all(client.clone()),
            pods,
            |s| &s.pods,
            |p: Pod| WatchedPod::from(&p),
        );
        let all = watcher::Config::default;
        mirror::spawn(
            self.clone(),
            Api::all(client.clone()),
            all(),
            |s| &s.bindings,
            |b: AzureIdentityBinding| b,
        );
        mirror::spawn(
            self.clone(),
            Api::all(client.clone()),
            all(),
            |s| &s.identities,
            |i: AzureIdentity| i,
        );
        mirror::spawn(
            self.clone(),
            Api::all(client.clone()),
            all(),
            |s| &s.exceptions,
            |e: AzurePodIdentityException| e,
        );
        if self.mode == Mode::Standard {
            let by_node = paged().labels(&format!("{}={node}", api::v1::NODE_NAME_LABEL));
            mirror::spawn(
                self.clone(),
                Api::all(client),
                by_node,
                |s| &s.assigned,
                |a: AzureAssignedIdentity| AssignedFacts::from(&a),
            );
        }
    }
}

impl mirror::Observer for State {
    fn changed(&self, kind: &'static str) {
        self.watch_proven(kind);
        self.changed();
    }
    fn failed(&self, kind: &'static str, error: &watcher::Error) {
        if self.watch_failed(kind) {
            tracing::warn!(kind, %error, "watch failed; listing again");
        } else {
            tracing::debug!(kind, %error, "watch still failing; listing again");
        }
    }
}
