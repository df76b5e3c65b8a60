// Builds the OCI distribution-spec conformance suite that the end-to-end test TestOCIConformance
// runs against a node. A module of its own so that the suite's dependencies stay out of
// Outpost's go.mod.
module github.com/outpost-registry/outpost/test/conformance

go 1.26.0

toolchain go1.26.8

tool github.com/opencontainers/distribution-spec/conformance

require (
	github.com/goccy/go-yaml v1.18.0 // indirect
	github.com/opencontainers/distribution-spec/conformance v0.0.0-20260831232431-97274622c111 // indirect
	github.com/opencontainers/distribution-spec/specs-go v0.0.0-20240926185104-8376368dd8aa // indirect
	github.com/opencontainers/go-digest v1.0.0 // indirect
	github.com/opencontainers/image-spec v1.1.1 // indirect
)
