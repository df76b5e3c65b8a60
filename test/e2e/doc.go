// Package e2e holds the black-box end-to-end tests of the outpost binary: each test starts real
// outpost processes on loopback ports with their own data directories and drives them over HTTP
// with go-containerregistry and net/http.
//
// The binary under test is $OUTPOST_E2E_BINARY (make e2e sets it); when that is empty, TestMain
// builds one with go build. Run with: go test ./test/e2e
package e2e
