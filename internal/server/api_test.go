package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sts"

	"github.com/iamdb/iamdb/internal/pki"
)

func TestLoopback(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:8787": true, "127.0.0.2:1": true, "[::1]:8787": true, "localhost:8787": true,
		"0.0.0.0:8787": false, "10.0.0.5:8787": false, "db.example.com:8787": false, "[::]:8787": false, "nonsense": false,
	} {
		if got := loopback(addr); got != want {
			t.Errorf("loopback(%q) = %v, want %v", addr, got, want)
		}
	}
}

// TestSTSAPIOverTLS: on an address that is not loopback the STS API is
// served over TLS with the data dir's certificate, and the AWS SDK, trusting
// the CA bundle, calls it; plain HTTP is not served there.
func TestSTSAPIOverTLS(t *testing.T) {
	e := newEnv(t)
	text := strings.Replace(e.cfgText, fmt.Sprintf(`api: {listen: "127.0.0.1:%d"}`, e.apiPort),
		fmt.Sprintf(`api: {listen: "0.0.0.0:%d"}`, e.apiPort), 1)
	if text == e.cfgText {
		t.Fatal("the test configuration has no api.listen to change")
	}
	if err := os.WriteFile(e.cfgPath, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	e.start()

	bundle, err := os.ReadFile(filepath.Join(e.dir.Path, pki.BundleFile))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(bundle)
	httpClient := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	client := sts.New(sts.Options{
		Region:       "us-east-1",
		BaseEndpoint: aws.String(fmt.Sprintf("https://127.0.0.1:%d", e.apiPort)),
		Credentials:  credentials.NewStaticCredentialsProvider(e.keyID, e.secret, ""),
		HTTPClient:   httpClient,
	})
	out, err := client.GetCallerIdentity(context.Background(), &sts.GetCallerIdentityInput{})
	if err != nil {
		t.Fatalf("GetCallerIdentity over TLS: %v", err)
	}
	if got := aws.ToString(out.Arn); got != "arn:aws:iam::"+testAccount+":user/alice" {
		t.Fatalf("caller %s", got)
	}

	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/?Action=GetCallerIdentity", e.apiPort))
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("plain HTTP to the TLS API answered %s", resp.Status)
		}
	}
	if !strings.Contains(e.logs.String(), "endpoint_url=https://") {
		t.Fatalf("the log does not announce an https endpoint:\n%s", e.logs)
	}
}
