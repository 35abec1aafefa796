//! The pods' lifecycles drawn from the seed before the run starts: pure, so a failing run can be
//! replayed from its seed, and apart from the run that carries them out.

use std::time::Duration;

use super::{IDENTITIES, MAX_EXTRA_LIFE, NODES, STATEFUL_WORKERS, UNBOUND_SHARE, WORKERS};

/// One pod's part in the run, drawn from the seed before it starts.
#[derive(Clone, Debug)]
pub(super) struct Lifecycle {
    pub(super) n: usize,
    /// The pod's name: `pod-<n>`, or a StatefulSet replica's, the same each time.
    pub(super) name: String,
    pub(super) node: &'static str,
    /// The identity the pod is bound to; `None` for a pod bound to nothing.
    pub(super) identity: Option<usize>,
    pub(super) extra_life: Duration,
}

/// The pods' plan: worker `w` runs `plan[w]` one after another. Workers 0 and 1 alternate
/// between the instances of `ss-a` and `ss-b` with one identity each; the StatefulSet workers
/// keep their name and identity and draw the node; the others draw node and identity.
pub(super) fn plan(seed: u64, pods: usize) -> Vec<Vec<Lifecycle>> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut plan = vec![Vec::new(); WORKERS];
    for n in 0..pods {
        let w = n % WORKERS;
        let turn = n / WORKERS;
        let stateful = STATEFUL_WORKERS.contains(&w);
        let name = if stateful {
            format!("sts-{w}")
        } else {
            format!("pod-{n}")
        };
        let (node, identity) = match w {
            0 => (NODES[turn % 2], Some(0)),
            1 => (NODES[2 + turn % 2], Some(1)),
            _ if stateful => (NODES[rng.usize(..NODES.len())], Some(w % IDENTITIES)),
            _ => (
                NODES[rng.usize(..NODES.len())],
                (rng.f64() >= UNBOUND_SHARE).then(|| rng.usize(..IDENTITIES)),
            ),
        };
        plan[w].push(Lifecycle {
            n,
            name,
            node,
            identity,
            extra_life: MAX_EXTRA_LIFE.mul_f64(rng.f64()),
        });
    }
    plan
}

/// The long-lived pods, present all along: what the targets must still carry at the end.
pub(super) const STABLE: [(&str, usize); 3] = [("a-0", 2), ("b-1", 0), ("c-0", 1)];

/// The `i`th long-lived pod.
pub(super) fn stable(i: usize, node: &'static str, identity: usize) -> Lifecycle {
    Lifecycle {
        n: 100_000 + i,
        name: format!("stable-{i}"),
        node,
        identity: Some(identity),
        extra_life: Duration::ZERO,
    }
}
