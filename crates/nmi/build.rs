//! Records the git commit and rustc's version for `aadpodidentity_nmi_build_info` (see the
//! `build-info` crate).

fn main() {
    build_info::emit();
}
