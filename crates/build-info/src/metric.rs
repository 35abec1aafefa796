//! The `aadpodidentity_<component>_build_info` gauge, the same for MIC and NMI.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{family::Family, gauge::Gauge},
    registry::Registry,
};

/// The labels of a build_info metric: which build of a component runs. Made by [`crate::labels!`]
/// in the component's own crate, where its version and its build script's variables are known.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildInfoLabels {
    pub version: String,
    pub git_commit: String,
    pub rustc: String,
}

/// Registers `<component>_build_info` (prefixed as `registry` is): one series, always 1, whose
/// labels say which build runs.
pub fn register(registry: &mut Registry, component: &str, labels: BuildInfoLabels) {
    let build_info = Family::<BuildInfoLabels, Gauge>::default();
    build_info.get_or_create(&labels).set(1);
    registry.register(
        format!("{component}_build_info"),
        format!(
            "Always 1; its labels say which {} runs: version, git_commit and rustc",
            component.to_uppercase()
        ),
        build_info,
    );
}

/// The labels of the crate that expands it: its version, and the commit and rustc its build
/// script recorded with [`crate::emit`].
#[macro_export]
macro_rules! labels {
    () => {
        $crate::BuildInfoLabels {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            git_commit: env!("POD_IDENTITY_GIT_COMMIT").to_owned(),
            rustc: env!("POD_IDENTITY_RUSTC").to_owned(),
        }
    };
}
