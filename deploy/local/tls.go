package local

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// TLSFiles are the PEM files of a throwaway certificate authority, a
// server certificate it signed for 127.0.0.1 and localhost, and a client
// certificate it signed.
type TLSFiles struct {
	CA, CAKey             string
	ServerCert, ServerKey string
	ClientCert, ClientKey string
}

// GenerateTLS writes a new CA, server and client certificate (ECDSA
// P-256, valid for a day) into dir. Tests and demos use it to run NATS
// with TLS without shipping keys.
func GenerateTLS(dir string) (TLSFiles, error) {
	f := TLSFiles{
		CA: filepath.Join(dir, "ca.pem"), CAKey: filepath.Join(dir, "ca-key.pem"),
		ServerCert: filepath.Join(dir, "server.pem"), ServerKey: filepath.Join(dir, "server-key.pem"),
		ClientCert: filepath.Join(dir, "client.pem"), ClientKey: filepath.Join(dir, "client-key.pem"),
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return f, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "pgjet test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return f, fmt.Errorf("create CA certificate: %w", err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return f, err
	}
	if err := writePEM(f.CA, "CERTIFICATE", caDER); err != nil {
		return f, err
	}
	caKeyDER, err := x509.MarshalECPrivateKey(caKey)
	if err != nil {
		return f, err
	}
	if err := writePEM(f.CAKey, "EC PRIVATE KEY", caKeyDER); err != nil {
		return f, err
	}
	leaves := []struct {
		cert, key string
		tmpl      *x509.Certificate
	}{
		{f.ServerCert, f.ServerKey, &x509.Certificate{
			SerialNumber: big.NewInt(2),
			Subject:      pkix.Name{CommonName: "localhost"},
			DNSNames:     []string{"localhost"},
			IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
			ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		}},
		{f.ClientCert, f.ClientKey, &x509.Certificate{
			SerialNumber: big.NewInt(3),
			Subject:      pkix.Name{CommonName: "pgjet"},
			ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}},
	}
	for _, l := range leaves {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return f, err
		}
		l.tmpl.NotBefore, l.tmpl.NotAfter = now.Add(-time.Hour), now.Add(24*time.Hour)
		l.tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		der, err := x509.CreateCertificate(rand.Reader, l.tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			return f, fmt.Errorf("create certificate %s: %w", l.tmpl.Subject.CommonName, err)
		}
		keyDER, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			return f, err
		}
		if err := writePEM(l.cert, "CERTIFICATE", der); err != nil {
			return f, err
		}
		if err := writePEM(l.key, "EC PRIVATE KEY", keyDER); err != nil {
			return f, err
		}
	}
	return f, nil
}

// EncryptedClient writes into dir a client certificate signed by f's CA
// for user, and its RSA key encrypted with passphrase in the PEM form
// libpq and pgx both read (sslpassword): for tests of a client key that
// needs a pass phrase.
func (f TLSFiles) EncryptedClient(dir, user, passphrase string) (cert, key string, err error) {
	caPEM, err := os.ReadFile(f.CA)
	if err != nil {
		return "", "", err
	}
	caKeyPEM, err := os.ReadFile(f.CAKey)
	if err != nil {
		return "", "", err
	}
	cb, _ := pem.Decode(caPEM)
	kb, _ := pem.Decode(caKeyPEM)
	if cb == nil || kb == nil {
		return "", "", fmt.Errorf("%s or %s holds no PEM block", f.CA, f.CAKey)
	}
	ca, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return "", "", err
	}
	caKey, err := x509.ParseECPrivateKey(kb.Bytes)
	if err != nil {
		return "", "", err
	}
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return "", "", err
	}
	now := time.Now()
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: big.NewInt(4),
		Subject:      pkix.Name{CommonName: user},
		NotBefore:    now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, ca, &rk.PublicKey, caKey)
	if err != nil {
		return "", "", err
	}
	// pgx decrypts only this legacy PEM encryption of a PKCS #1 key, so
	// that is what a user of sslpassword with pgjet has.
	//lint:ignore SA1019 the form pgx reads
	block, err := x509.EncryptPEMBlock(rand.Reader, "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rk), []byte(passphrase), x509.PEMCipherAES256) //nolint:staticcheck
	if err != nil {
		return "", "", err
	}
	cert, key = filepath.Join(dir, "client-enc.pem"), filepath.Join(dir, "client-enc-key.pem")
	if err := writePEM(cert, "CERTIFICATE", der); err != nil {
		return "", "", err
	}
	if err := os.WriteFile(key, pem.EncodeToMemory(block), 0o600); err != nil {
		return "", "", err
	}
	return cert, key, nil
}

func writePEM(path, typ string, der []byte) error {
	b := pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
