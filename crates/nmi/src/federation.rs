//! Federated mode: a pod whose ServiceAccount is annotated `azure.workload.identity/client-id`
//! and which is labelled `azure.workload.identity/use: "true"` gets, through the usual IMDS
//! endpoint, a token of that identity obtained by exchanging a service-account token bound to the
//! pod at Entra. No AzureIdentity, binding, AzureAssignedIdentity, MIC or identity on the VM.
//!
//! - [`decide`]: which pods, which identity, which requests (pure, tested on plain values);
//! - `exchange`: TokenRequest at the apiserver and the exchange at Entra;
//! - this file: the ServiceAccount watch, the token cache entries (per service account, client
//!   id, tenant and resource, in NMI's one token cache) and dropping them at once when an
//!   annotation changes, the account goes, or a pod whose token was exchanged goes.
//!
//! The authorizer sends a pod here once it has found it (its `federated_pod`), and audits the
//! token or refuses in IMDS's terms; [`crate::readiness`] fetches federated pods' tokens ahead.

pub mod decide;
mod exchange;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use k8s_openapi::api::core::v1::ServiceAccount;
use kube::{Api, runtime::watcher};
use matching::{IdentityRequest, PodFacts};
use mirror::{Key, Mirror, Observer, Sink, sync};

use self::{
    decide::{AccountFacts, FederatedIdentity, PodMode, Selector},
    exchange::{BoundPod, Exchange},
};
use crate::{
    Error,
    state::State,
    token::{TokenSource, jwt_claim},
    token_cache::{CacheKey, Cached, TokenCache},
};

/// Where federated tokens come from.
#[derive(Clone, Debug)]
pub struct FederationConfig {
    /// Entra's authority host, e.g. `https://login.microsoftonline.com/`.
    pub authority: String,
    /// The tenant of identities whose service account names none (`--federated-tenant-id`).
    pub tenant: String,
}

/// Why a federated pod gets no token.
#[derive(Debug)]
pub enum Refused {
    /// The request names another identity than the service account's.
    OtherIdentity(FederatedIdentity),
    /// The pod has no UID to bind a token to (never so for a pod the apiserver stored).
    NoUid,
    /// The apiserver or Entra refused or failed.
    Upstream(Arc<Error>),
    /// The service account's annotation changed while the token was fetched.
    Changed,
}

/// A federated token, for the authorizer to hand out.
pub struct FederatedToken {
    pub identity: FederatedIdentity,
    pub cached: Cached,
}

/// Federated mode's state and calls; one per NMI.
pub struct Federation<S> {
    state: Arc<State>,
    cache: Arc<TokenCache<S>>,
    accounts: Accounts,
    kube: kube::Client,
    http: reqwest::Client,
    config: FederationConfig,
    /// Pods whose bound token was exchanged: (namespace, name) -> (UID, service account).
    exchanged_for: Mutex<HashMap<Key, (String, String)>>,
}

impl<S: TokenSource> Federation<S> {
    /// Starts watching ServiceAccounts, and watching for pods that go, whose entries are then
    /// dropped. `state` is NMI's, whose version the ServiceAccount watch moves too (so that
    /// remembered answers are not replayed after an annotation changed).
    pub fn start(
        state: Arc<State>,
        cache: Arc<TokenCache<S>>,
        kube: kube::Client,
        http: reqwest::Client,
        config: FederationConfig,
    ) -> Arc<Self> {
        let this = Arc::new(Self {
            state,
            cache,
            accounts: Accounts::default(),
            kube: kube.clone(),
            http,
            config,
            exchanged_for: Mutex::default(),
        });
        mirror::spawn(
            this.clone(),
            Api::<ServiceAccount>::all(kube),
            watcher::Config::default(),
            |f| &f.accounts,
            |sa: ServiceAccount| AccountFacts::from(&sa),
        );
        let weak = Arc::downgrade(&this);
        let mut changes = this.state.subscribe();
        tokio::spawn(async move {
            while changes.changed().await.is_ok() {
                let Some(this) = weak.upgrade() else { return };
                this.drop_gone_pods();
            }
        });
        this
    }

    /// Whether the ServiceAccounts have been listed once.
    pub fn is_synced(&self) -> bool {
        self.accounts.mirror.is_ready()
    }

    /// How `pod` is served, by the current ServiceAccounts.
    pub fn mode(&self, pod: &PodFacts) -> PodMode {
        let account = self
            .accounts
            .mirror
            .get(&pod.namespace, decide::service_account_of(pod));
        decide::pod_mode(pod, account.as_deref(), &self.config.tenant)
    }

    /// The token of a federated pod (`identity` decided by [`Federation::mode`]) for `request`.
    pub async fn issue(
        &self,
        pod: &PodFacts,
        identity: FederatedIdentity,
        request: &IdentityRequest,
        resource: &str,
    ) -> Result<FederatedToken, Refused> {
        let selector = decide::selector(request, &identity);
        if selector == Selector::Refused {
            return Err(Refused::OtherIdentity(identity));
        }
        let uid = pod.uid.clone().ok_or(Refused::NoUid)?;
        let decided_at = self.state.version();
        let key = CacheKey::federated(
            &identity.namespace,
            &identity.service_account,
            &identity.client_id,
            &identity.tenant_id,
            resource,
        );
        let (kube, http, authority) = (
            self.kube.clone(),
            self.http.clone(),
            self.config.authority.clone(),
        );
        let (id, name, res) = (identity.clone(), pod.name.clone(), resource.to_owned());
        let cached = self
            .cache
            .get_or_fill(key, || {
                let (kube, http, authority, id, name, uid, res) = (
                    kube.clone(),
                    http.clone(),
                    authority.clone(),
                    id.clone(),
                    name.clone(),
                    uid.clone(),
                    res.clone(),
                );
                async move {
                    let exchange = Exchange {
                        kube: &kube,
                        http: &http,
                        authority: &authority,
                    };
                    exchange
                        .token(
                            &id,
                            BoundPod {
                                name: &name,
                                uid: &uid,
                            },
                            &res,
                        )
                        .await
                }
            })
            .await
            .map_err(Refused::Upstream)?;
        if !cached.hit {
            sync::lock(&self.exchanged_for).insert(
                (pod.namespace.clone(), pod.name.clone()),
                (uid.clone(), identity.service_account.clone()),
            );
        }
        // The account's annotations may have changed while Entra answered.
        if self.state.version() != decided_at && self.mode(pod) != PodMode::Federated(identity.clone()) {
            return Err(Refused::Changed);
        }
        if selector == Selector::CheckToken {
            let oid = jwt_claim(&cached.token.access_token, "oid");
            let mirid = jwt_claim(&cached.token.access_token, "xms_mirid");
            if !decide::token_matches(request, oid.as_deref(), mirid.as_deref()) {
                return Err(Refused::OtherIdentity(identity));
            }
        }
        Ok(FederatedToken { identity, cached })
    }

    /// Drops the entries of service accounts whose annotations changed or which were deleted.
    fn drop_changed_accounts(&self) {
        let changed = std::mem::take(&mut *sync::lock(&self.accounts.changed));
        for (ns, sa) in changed {
            let n = self.cache.forget(&CacheKey::federated_prefix(&ns, &sa));
            if n > 0 {
                tracing::info!(namespace = %ns, service_account = %sa, entries = n,
                    "service account's identity changed or it was deleted: its federated tokens dropped");
            }
        }
    }

    /// Drops the entries fetched with the bound token of a pod that is gone (deleted, being
    /// deleted, or replaced by a namesake).
    fn drop_gone_pods(&self) {
        let gone: Vec<(Key, String)> = {
            let mut exchanged = sync::lock(&self.exchanged_for);
            let gone: Vec<Key> = exchanged
                .iter()
                .filter(|((ns, name), (uid, _))| {
                    self.state
                        .pods
                        .by_name(ns, name)
                        .is_none_or(|p| p.uid.as_deref() != Some(uid.as_str()))
                })
                .map(|(k, _)| k.clone())
                .collect();
            gone.into_iter()
                .filter_map(|k| exchanged.remove(&k).map(|(_, sa)| (k, sa)))
                .collect()
        };
        for ((ns, pod), sa) in gone {
            let n = self.cache.forget(&CacheKey::federated_prefix(&ns, &sa));
            if n > 0 {
                tracing::info!(namespace = %ns, pod = %pod, service_account = %sa, entries = n,
                    "pod whose token was exchanged is gone: its service account's federated tokens dropped");
            }
        }
    }
}

impl<S: TokenSource> Observer for Federation<S> {
    fn changed(&self, kind: &'static str) {
        self.drop_changed_accounts();
        // Moves NMI's state version: remembered answers are decided again.
        Observer::changed(&*self.state, kind);
    }
    fn failed(&self, kind: &'static str, error: &watcher::Error) {
        Observer::failed(&*self.state, kind, error);
    }
}

/// The ServiceAccounts, and which of them changed since the cache last heard.
#[derive(Default)]
struct Accounts {
    mirror: Mirror<AccountFacts>,
    changed: Mutex<Vec<Key>>,
}

impl Accounts {
    fn note_if_changed(&self, key: &Key, now: Option<&AccountFacts>) {
        let before = self.mirror.get(&key.0, &key.1);
        if before.as_deref() != now {
            sync::lock(&self.changed).push(key.clone());
        }
    }
}

impl Sink<AccountFacts> for Accounts {
    fn apply(&self, key: Key, item: AccountFacts) {
        self.note_if_changed(&key, Some(&item));
        self.mirror.apply(key, item);
    }
    fn delete(&self, key: &Key) {
        self.note_if_changed(key, None);
        self.mirror.delete(key);
    }
    fn replace(&self, items: Vec<(Key, AccountFacts)>) {
        // A relist: compare it with what was known, so that unchanged accounts keep their tokens.
        let fresh: HashMap<&Key, &AccountFacts> = items.iter().map(|(k, v)| (k, v)).collect();
        let mut changed: Vec<Key> = self
            .mirror
            .read()
            .iter()
            .filter(|(k, v)| fresh.get(k).is_none_or(|now| *now != v.as_ref()))
            .map(|(k, _)| k.clone())
            .collect();
        changed.extend(
            items
                .iter()
                .filter(|(k, _)| self.mirror.get(&k.0, &k.1).is_none())
                .map(|(k, _)| k.clone()),
        );
        sync::lock(&self.changed).extend(changed);
        self.mirror.replace(items);
    }
}
