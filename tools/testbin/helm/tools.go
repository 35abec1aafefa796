//go:build tools

// Package tools pins the upstream helm command used by pod-identity's chart tests.
package tools

import _ "helm.sh/helm/v3/cmd/helm"
