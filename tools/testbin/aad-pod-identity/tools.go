//go:build tools

// Package tools pins upstream aad-pod-identity's NMI and MIC (v1.8.17, the release pod-identity
// is a drop-in for), which the mixed-version tests run beside ours.
package tools

import (
	_ "github.com/Azure/aad-pod-identity/cmd/mic"
	_ "github.com/Azure/aad-pod-identity/cmd/nmi"
)
