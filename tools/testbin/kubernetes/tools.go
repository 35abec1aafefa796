//go:build tools

// Package tools pins the upstream Kubernetes commands that pod-identity's tests
// run (kube-apiserver and kubectl); scripts/testbin.sh builds them from here.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver/app"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
