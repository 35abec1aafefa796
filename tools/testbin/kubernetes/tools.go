//go:build tools

// Package tools pins the upstream Kubernetes commands that pod-identity's tests
// run (kube-apiserver and kubectl, and the real node's kubelet, controller manager
// and scheduler); scripts/testbin.sh builds them from here.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver/app"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	_ "k8s.io/kubernetes/cmd/kube-scheduler/app"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet/app"
)
