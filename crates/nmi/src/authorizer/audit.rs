//! The audit of a token handed out: one `nmi::audit` line (who got which identity's token, for
//! which resource, asked by whom) and its count by cache hit,
//! whichever path issued it (the decision, federated mode, or the server's memo of answers).

use crate::metrics::Metrics;

/// What the audit log says about an issued token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Audit {
    pub pod: String,
    pub namespace: String,
    /// `<namespace>/<name>` of the AzureIdentity.
    pub identity: String,
    pub binding: String,
    pub client_id: String,
    pub resource: String,
}

impl Audit {
    /// Writes the `nmi::audit` line of the token and counts it. `source` is NMI's own text
    /// (`IP <address>`, `pod <namespace>/<name>`).
    pub fn issued(&self, source: &dyn std::fmt::Display, cache_hit: bool, metrics: &Metrics) {
        tracing::info!(
            target: "nmi::audit",
            // Quoted (`&str`, not `%`): the resource is the pod's text and the rest come from
            // objects; a quoted value is one field, whatever it holds, for whoever reads the line.
            pod = self.pod.as_str(),
            namespace = self.namespace.as_str(),
            identity = self.identity.as_str(),
            binding = self.binding.as_str(),
            client_id = self.client_id.as_str(),
            resource = self.resource.as_str(),
            source = %source,
            cache_hit,
            "token issued"
        );
        metrics.issued(cache_hit);
    }
}
