package app

import (
	"fmt"
	"path/filepath"

	"go.uber.org/zap"

	"github.com/outpost-registry/outpost/internal/acr"
	"github.com/outpost-registry/outpost/internal/auth"
	"github.com/outpost-registry/outpost/internal/certs"
	"github.com/outpost-registry/outpost/internal/config"
)

// newAuthenticator builds who-may-do-what for /v2 and /acr over the node's control plane: the
// admin and tokens on a node without an Outpost parent; on a connected registry its own sync
// token and the client tokens its parent sent; on both, the sync tokens of the children.
func (n *Node) newAuthenticator(audit *zap.Logger) (*auth.Authenticator, error) {
	var v auth.Verifier = acr.NewRootVerifier(n.control)
	if n.cfg.Connected() {
		v = acr.NewConnectedVerifier(n.control, n.cfg.ParsedConnectionString())
	}
	a, err := auth.New(auth.Options{
		Verifier:       v,
		Anonymous:      n.cfg.Auth.AnonymousPull,
		TrustedProxies: n.cfg.Auth.TrustedProxies,
		Audit:          audit,
	})
	if err != nil {
		return nil, &config.Error{Key: "auth", Source: n.src["auth.anonymousPull"], Msg: err.Error()}
	}
	if len(n.cfg.Auth.AnonymousPull) > 0 {
		n.log.Warn("anonymous pull is on", zap.Strings("repositories", n.cfg.Auth.AnonymousPull))
	}
	return a, nil
}

// certificates loads the HTTPS certificate: the configured files, watched for changes, or the
// self-signed pair generated in the data directory at the first start. Its fingerprint is
// logged so that a client can check what it is asked to trust.
func (n *Node) certificates(src config.Sources) (*certs.Reloader, error) {
	certFile, keyFile, key := n.cfg.TLS.CertFile, n.cfg.TLS.KeyFile, "tls.certFile"
	if n.cfg.TLS.SelfSigned {
		key = "tls.selfSigned"
		var generated bool
		var err error
		certFile, keyFile, generated, err = certs.SelfSigned(filepath.Join(n.registry.DataDir(), "outpost", "tls"), n.cfg.TLS.Hosts)
		if err != nil {
			return nil, &config.Error{Key: key, Source: src[key], Msg: fmt.Sprintf("generating the self-signed certificate: %v", err)}
		}
		if generated {
			n.log.Info("generated a self-signed TLS certificate", zap.String("cert_file", certFile))
		}
	}
	r, err := certs.NewReloader(certFile, keyFile, n.log.Named("tls"))
	if err != nil {
		return nil, &config.Error{Key: key, Source: src[key], Msg: err.Error()}
	}
	cert, _ := r.GetCertificate(nil)
	n.log.Info("TLS certificate", zap.String("cert_file", certFile), zap.String("fingerprint_sha256", certs.Fingerprint(cert.Certificate[0])),
		zap.Bool("self_signed", n.cfg.TLS.SelfSigned))
	return r, nil
}
