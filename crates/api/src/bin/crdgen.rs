//! Prints the four aadpodidentity.k8s.io CRDs as YAML (`make crds` writes them to deploy/crds/).
fn main() {
    print!("{}", api::crds_yaml());
}
