//! The sandbox's real node (kubelet, containerd, runc, a CNI bridge in a network namespace of its
//! own; see scripts/node.sh) and the pod sandbox program of its images (src/bin/pause.rs). The
//! chart's end-to-end test lives in tests/.
