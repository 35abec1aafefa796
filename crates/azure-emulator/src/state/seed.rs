//! Building the initial state from a world file: kept apart from the state types because it is
//! one long walk over the world's declarations, read only when changing what a world can declare.

use std::{collections::HashMap, sync::Mutex};

use super::{Inner, Shared};
use crate::{
    calls::{CallLog, Counters},
    error::{Error, Result},
    faults::Faults,
    ids,
    model::{Compute, ComputeKind, Identity, IdentityState, Instance, KeyCache, Principal, SystemIdentity},
    time,
    token::{self, SigningKey},
    world::World,
};

impl Shared {
    pub fn new(world: World) -> Result<Self> {
        world.validate()?;
        let default_sub = world.default_subscription()?.to_string();
        let mut inner = Inner {
            op_latency_ms: world.arm.operation_latency_ms,
            ..Inner::default()
        };
        for spec in &world.identities {
            let sub = spec.subscription.clone().unwrap_or_else(|| default_sub.clone());
            let id = ids::identity_id(&sub, &spec.resource_group, &spec.name);
            inner.identities.insert(
                ids::key(&id),
                Identity {
                    id,
                    name: spec.name.clone(),
                    subscription: sub,
                    resource_group: spec.resource_group.clone(),
                    client_id: spec.client_id.clone(),
                    principal_id: spec.principal_id.clone(),
                    location: world.location.clone(),
                    federated: spec.federated_credentials.clone(),
                    tags: crate::tags::replacement(&spec.tags).unwrap_or_else(|_| spec.tags.clone()),
                },
            );
        }
        let computes = world
            .vms
            .iter()
            .map(|vm| ComputeSeed {
                kind: ComputeKind::VirtualMachine,
                id: ids::vm_id(
                    vm.subscription.as_ref().unwrap_or(&default_sub),
                    &vm.resource_group,
                    &vm.name,
                ),
                name: &vm.name,
                subscription: vm.subscription.as_ref(),
                resource_group: &vm.resource_group,
                system_assigned: vm.system_assigned,
                system_principal_id: vm.system_principal_id.as_ref(),
                user_assigned: &vm.user_assigned,
                latency_ms: vm.operation_latency_ms,
                instances: vec![Instance::new(&vm.name, &vm.node)],
            })
            .chain(world.vmss.iter().map(|ss| {
                ComputeSeed {
                    kind: ComputeKind::ScaleSet,
                    id: ids::vmss_id(
                        ss.subscription.as_ref().unwrap_or(&default_sub),
                        &ss.resource_group,
                        &ss.name,
                    ),
                    name: &ss.name,
                    subscription: ss.subscription.as_ref(),
                    resource_group: &ss.resource_group,
                    system_assigned: ss.system_assigned,
                    system_principal_id: ss.system_principal_id.as_ref(),
                    user_assigned: &ss.user_assigned,
                    latency_ms: ss.operation_latency_ms,
                    instances: ss
                        .instances
                        .iter()
                        .map(|i| Instance::new(&i.name, &i.node))
                        .collect(),
                }
            }))
            .collect::<Vec<_>>();
        for c in computes {
            let st = c.initial_identities(&inner)?;
            let compute = Compute {
                kind: c.kind,
                id: c.id,
                name: c.name.to_owned(),
                subscription: c.subscription.unwrap_or(&default_sub).clone(),
                resource_group: c.resource_group.to_owned(),
                unique_id: token::guid(),
                model: st.clone(),
                effective: st,
                provisioning_state: "Succeeded",
                write_seq: 0,
                applied_seq: 0,
                latency_ms: c.latency_ms,
                instances: c.instances,
            };
            inner.computes.insert(ids::key(&compute.id), compute);
        }
        for sp in &world.service_principals {
            let mut pem = sp.certificate_pem.clone().unwrap_or_default();
            if let Some(f) = &sp.certificate_file {
                pem.push_str(&std::fs::read_to_string(f).map_err(|e| Error::Io(f.display().to_string(), e))?);
            }
            let certs = if pem.is_empty() {
                Vec::new()
            } else {
                token::pem_certs(&pem)?
                    .into_iter()
                    .map(|der| {
                        let (s1, s256) = token::thumbprints(&der);
                        (der, s1, s256)
                    })
                    .collect()
            };
            inner.principals.push(Principal {
                name: sp.name.clone(),
                client_id: sp.client_id.clone(),
                object_id: sp.object_id.clone().unwrap_or_else(token::guid),
                secret: sp.client_secret.clone(),
                certs,
                federated: sp.federated_credentials.clone(),
            });
        }
        let mut grants = Vec::new();
        for (i, sp) in world.service_principals.iter().enumerate() {
            for s in &sp.may_assign {
                grants.push((inner.principals[i].object_id.clone(), s.clone()));
            }
        }
        for spec in &world.identities {
            for s in &spec.may_assign {
                grants.push((spec.principal_id.clone(), s.clone()));
            }
        }
        for (oid, scope) in grants {
            inner
                .grant(&oid, &scope)
                .map_err(|_| Error::Config(format!("may_assign {scope} names no identity")))?;
        }
        Ok(Self {
            tenant: world.tenant_id.clone(),
            location: world.location.clone(),
            key: SigningKey::generate()?,
            inner: Mutex::new(inner),
            token_cache: Mutex::new(HashMap::new()),
            faults: Faults::default(),
            log: CallLog::default(),
            counters: Counters::default(),
            arm_url: Mutex::new(String::new()),
            entra_url: Mutex::new(String::new()),
            oidc_keys: KeyCache::default(),
            clock: time::Clock::default(),
            world,
        })
    }
}

impl Instance {
    /// A new instance (a fresh vmId) of `name` on Kubernetes node `node`.
    fn new(name: &str, node: &str) -> Self {
        Self {
            name: name.to_owned(),
            node: node.to_owned(),
            vm_id: token::guid(),
        }
    }
}

/// A VM or scale set as the world declares it, in the terms both share.
struct ComputeSeed<'a> {
    kind: ComputeKind,
    id: String,
    name: &'a str,
    subscription: Option<&'a String>,
    resource_group: &'a str,
    system_assigned: bool,
    system_principal_id: Option<&'a String>,
    user_assigned: &'a [String],
    latency_ms: Option<u64>,
    instances: Vec<Instance>,
}

impl ComputeSeed<'_> {
    /// The identities it starts with: its system-assigned one, and the declared identities it
    /// names as user-assigned.
    fn initial_identities(&self, inner: &Inner) -> Result<IdentityState> {
        let mut st = IdentityState::default();
        if self.system_assigned {
            st.system = Some(SystemIdentity {
                principal_id: self.system_principal_id.cloned().unwrap_or_else(token::guid),
                client_id: token::guid(),
            });
        }
        for u in self.user_assigned {
            let i = inner
                .resolve_identity(u)
                .ok_or_else(|| Error::Config(format!("user_assigned {u} names no declared identity")))?;
            st.user.insert(ids::key(&i.id), i.id.clone());
        }
        Ok(st)
    }
}
