// Package helm holds the test of the Helm chart in firehose/: it renders the chart with
// Helm's Go SDK for a few value sets, decodes every object strictly into the Kubernetes API
// types, and checks each firehose process's flags, environment and configuration file
// against the binary (serve --help, config check). Helm's and Kubernetes' modules stay in
// this module, out of firehose's go.mod.
//
//	cd deploy/helm && go test ./...
package helm
