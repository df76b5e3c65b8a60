module github.com/outpost-registry/outpost/cmd/outpost-legacy-deflate

go 1.26.0

toolchain go1.26.8

require (
	github.com/klauspost/compress v1.15.12
	github.com/klauspost/pgzip v1.2.5
)
