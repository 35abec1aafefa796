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
        let initial =
            |inner: &Inner, sys: bool, sys_pid: &Option<String>, ua: &[String]| -> Result<IdentityState> {
                let mut st = IdentityState::default();
                if sys {
                    st.system = Some(SystemIdentity {
                        principal_id: sys_pid.clone().unwrap_or_else(token::guid),
                        client_id: token::guid(),
                    });
                }
                for u in ua {
                    let i = inner.resolve_identity(u).ok_or_else(|| {
                        Error::Config(format!("user_assigned {u} names no declared identity"))
                    })?;
                    st.user.insert(ids::key(&i.id), i.id.clone());
                }
                Ok(st)
            };
        for vm in &world.vms {
            let sub = vm.subscription.clone().unwrap_or_else(|| default_sub.clone());
            let id = ids::vm_id(&sub, &vm.resource_group, &vm.name);
            let st = initial(
                &inner,
                vm.system_assigned,
                &vm.system_principal_id,
                &vm.user_assigned,
            )?;
            inner.computes.insert(
                ids::key(&id),
                Compute {
                    kind: ComputeKind::VirtualMachine,
                    id,
                    name: vm.name.clone(),
                    subscription: sub,
                    resource_group: vm.resource_group.clone(),
                    unique_id: token::guid(),
                    model: st.clone(),
                    effective: st,
                    provisioning_state: "Succeeded",
                    write_seq: 0,
                    applied_seq: 0,
                    latency_ms: vm.operation_latency_ms,
                    instances: vec![Instance {
                        name: vm.name.clone(),
                        node: vm.node.clone(),
                        vm_id: token::guid(),
                    }],
                },
            );
        }
        for ss in &world.vmss {
            let sub = ss.subscription.clone().unwrap_or_else(|| default_sub.clone());
            let id = ids::vmss_id(&sub, &ss.resource_group, &ss.name);
            let st = initial(
                &inner,
                ss.system_assigned,
                &ss.system_principal_id,
                &ss.user_assigned,
            )?;
            let instances = ss
                .instances
                .iter()
                .map(|i| Instance {
                    name: i.name.clone(),
                    node: i.node.clone(),
                    vm_id: token::guid(),
                })
                .collect();
            inner.computes.insert(
                ids::key(&id),
                Compute {
                    kind: ComputeKind::ScaleSet,
                    id,
                    name: ss.name.clone(),
                    subscription: sub,
                    resource_group: ss.resource_group.clone(),
                    unique_id: token::guid(),
                    model: st.clone(),
                    effective: st,
                    provisioning_state: "Succeeded",
                    write_seq: 0,
                    applied_seq: 0,
                    latency_ms: ss.operation_latency_ms,
                    instances,
                },
            );
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
